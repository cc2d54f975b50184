"""Reading a job's data: tables and their checks, the splits, streaming from the store, the token cache, and the lineage of what a run read."""
