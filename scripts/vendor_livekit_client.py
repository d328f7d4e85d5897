#!/usr/bin/env python3
"""Copy livekit-client's UMD bundle into the package (``aiolivekit/server/static/vendor``).

The room page of ``aiolivekit serve`` loads livekit-client from the server itself (no CDN).
This script takes the bundle from an installed npm package (default: the one the interop
tests pin in ``tests/interop/js``), unchanged, with its LICENSE, the licenses of the
packages the UMD bundle includes, and ``livekit-client.json`` (version, sha256). Run it
when the pinned version changes, then commit the result::

    python3 scripts/vendor_livekit_client.py [--node-modules DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_NODE_MODULES = ROOT / "tests" / "interop" / "js" / "node_modules"
VENDOR = ROOT / "src" / "aiolivekit" / "server" / "static" / "vendor"
BUNDLE = "livekit-client.umd.js"
# the runtime dependencies of livekit-client the UMD bundle contains (and theirs)
BUNDLED = ("@livekit/mutex", "@livekit/protocol", "@bufbuild/protobuf", "events", "jose",
           "loglevel", "machina", "sdp-transform", "sdp", "tslib", "typed-emitter",
           "webrtc-adapter")


def _license_file(pkg: Path) -> Path | None:
    for child in sorted(pkg.iterdir()):
        if child.name.lower().startswith(("license", "licence", "copying")):
            return child
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node-modules", type=Path, default=DEFAULT_NODE_MODULES)
    args = parser.parse_args(argv)
    nm: Path = args.node_modules
    client = nm / "livekit-client"
    meta = json.loads((client / "package.json").read_text())
    src = client / "dist" / BUNDLE
    if not src.is_file():
        print(f"{src} not found (npm ci in tests/interop/js)", file=sys.stderr)
        return 1
    VENDOR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, VENDOR / BUNDLE)
    shutil.copyfile(client / "LICENSE", VENDOR / "livekit-client.LICENSE")
    notices = [f"Third-party code inside {BUNDLE} (livekit-client {meta['version']}).\n"
               "Each package's version, license and license text, as npm installed it.\n"]
    for name in BUNDLED:
        pkg = nm / name
        info = json.loads((pkg / "package.json").read_text())
        text_file = _license_file(pkg)
        text = (text_file.read_text() if text_file is not None else
                f"(no license file in the npm package; its package.json says "
                f"{info.get('license')!r}; see {info.get('homepage') or info.get('repository')})\n")
        notices.append(f"\n{'=' * 78}\n{name} {info['version']} ({info.get('license')})\n"
                       f"{'=' * 78}\n{text}")
    (VENDOR / "THIRD_PARTY_LICENSES.txt").write_text("".join(notices))
    digest = hashlib.sha256((VENDOR / BUNDLE).read_bytes()).hexdigest()
    record = {"package": "livekit-client", "version": meta["version"],
              "license": meta.get("license"), "file": f"dist/{BUNDLE}", "sha256": digest}
    (VENDOR / "livekit-client.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"vendored livekit-client {meta['version']} ({digest[:12]}...) into {VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
