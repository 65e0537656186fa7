"""CLIP training and evaluation: the streaming contrastive trainer (`python -m train`), and
the commands over its runs: evaluate, overlap, report, export."""
