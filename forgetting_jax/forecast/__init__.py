"""`forgetting-jax forecast`: which upstream examples a fine-tuned checkpoint forgot, predicted from
k of them scored and the forgetting matrix's rows (forecast/forecast.py)."""
