"""What is measured: each scenario serves or drives the app its own way and returns its figures."""
