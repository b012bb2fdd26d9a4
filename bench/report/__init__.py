"""What is shown: ``bench/RESULTS.md`` rendered from ``bench/results.json``."""
