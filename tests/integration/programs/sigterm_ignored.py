"""Ignores SIGTERM, starts a child process, then sleeps."""

import signal
import subprocess
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "3600"])
print("ready", flush=True)
time.sleep(3600)  # BLOCK
