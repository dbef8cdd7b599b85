"""plus: personalized RLHF re-run. PLUS (summaries learned with RL), PReF (reward factorization), baselines."""

__version__ = "0.1.0"
