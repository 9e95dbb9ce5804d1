"""Training loop, evaluation (OKS AP, PCK) and few-shot / zero-shot sampling."""
