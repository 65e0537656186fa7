"""Languages of the worldwide recipe: codes and buckets, scripts, word segmenters."""
