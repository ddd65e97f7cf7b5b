"""Forgetting prediction: complete an unseen task's row from k observed entries, and the paper's
evaluation protocol with its baselines."""
