"""Shared by the SDK scripts: the gateway address and one way to assert."""
import os

GW = os.environ["MG_GATEWAY"]
ADMIN = os.environ.get("MG_ADMIN", "")


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok - {what}")
