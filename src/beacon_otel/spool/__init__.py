"""What cannot be delivered yet, on disk: per destination, in files several processes share safely."""
