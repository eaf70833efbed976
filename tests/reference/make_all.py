"""Writes every PyTorch reference file the C++ tests compare against.

Runs each tests/reference/ref_*.py with --out DIR. Without torch (Debian's python3-torch) it says
so and writes nothing: the tests that need a reference then report themselves skipped. With
--require-torch (the build found this python importing torch, so the tests require the files) a
missing torch is an error instead.
"""
import argparse
import glob
import os
import subprocess
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--require-torch", action="store_true")
    args = parser.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError as e:
        if args.require_torch:
            print(f"reference data: {sys.executable} cannot import torch ({e}), but the build "
                  "found it there and requires the reference files; reconfigure the build")
            return 1
        print("reference data: python3-torch is not installed; reference tests will be skipped")
        return 0
    os.makedirs(args.out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    failed = []
    for script in sorted(glob.glob(os.path.join(here, "ref_*.py"))):
        print("reference data:", os.path.basename(script), flush=True)
        r = subprocess.run([sys.executable, script, "--out", args.out])
        if r.returncode != 0:
            failed.append(os.path.basename(script))
    if failed:
        print("reference data: FAILED:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
