"""`python -m forgetting_jax <command>`: same as the `forgetting-jax` script."""

from forgetting_jax.cli import run

if __name__ == "__main__":
    run()
