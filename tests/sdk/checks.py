"""Shared by the SDK scripts: the gateway address, one way to assert, and
a counter of the requests an SDK sends (an httpx request hook)."""
import os

GW = os.environ["MG_GATEWAY"]
ADMIN = os.environ.get("MG_ADMIN", "")


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok - {what}")


class Counter:
    def __init__(self):
        self.n = 0

    def __call__(self, request):
        self.n += 1
