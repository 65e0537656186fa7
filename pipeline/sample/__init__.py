"""The embedded sample: fetching its inputs (`python -m pipeline.sample.fetch`), the
openclipart pool, and `make shards` on it over a loopback HTTP server."""
