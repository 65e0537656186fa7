"""Test scaffolding, also used by bench/: loopback HTTP, S3 and Ray servers, a headless
browser, and synthetic Wikipedia dumps and statistics. Not part of the product."""
