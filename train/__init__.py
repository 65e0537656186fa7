"""Streaming contrastive (CLIP) trainer. Built in a later issue."""
