"""What every layer may use: containing Beacon's own failures, and locks that follow gevent and eventlet."""
