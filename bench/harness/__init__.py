"""How it is measured: the apps, the child processes, the loopback services and the instruction counts."""
