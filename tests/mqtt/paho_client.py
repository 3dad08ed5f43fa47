#!/usr/bin/env python3
"""A real MQTT 5 client (paho-mqtt 2.x) for tests/tests/mqtt.rs; prints JSON lines.

  paho_client.py subscribe HOST PORT CLIENT_ID FILTER        persistent session (expiry 300 s), subscribe, leave
  paho_client.py collect HOST PORT CLIENT_ID COUNT TIMEOUT   resume it; print {"present":…} then each message
  paho_client.py subs HOST PORT COUNT                        one SUBSCRIBE of COUNT filters; print the reason codes
  paho_client.py pipeline HOST PORT TOPIC COUNT BAD          COUNT QoS 1 publishes without waiting (number BAD, from 0,
                                                             is not a number); print the server's Receive Maximum and
                                                             each PUBACK's reason code in publish order
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def client(cid):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    return c


def connect(c, host, port, persistent):
    props = Properties(PacketTypes.CONNECT)
    if persistent:
        props.SessionExpiryInterval = 300
    done = threading.Event()
    out = {}

    def on_connect(_c, _u, flags, reason, p):
        out["present"] = bool(flags.session_present)
        out["reason"] = reason.value
        out["receive_maximum"] = getattr(p, "ReceiveMaximum", None)
        done.set()

    c.on_connect = on_connect
    c.connect(host, int(port), keepalive=30, clean_start=not persistent, properties=props)
    c.loop_start()
    if not done.wait(10):
        sys.exit("no CONNACK within 10 s")
    return out


def main():
    cmd = sys.argv[1]
    if cmd == "subscribe":
        host, port, cid, flt = sys.argv[2:6]
        c = client(cid)
        connect(c, host, port, True)
        acked = threading.Event()
        c.on_subscribe = lambda *_a: acked.set()
        c.subscribe(flt, qos=1)
        if not acked.wait(10):
            sys.exit("no SUBACK within 10 s")
        c.disconnect()
        c.loop_stop()
    elif cmd == "collect":
        host, port, cid, count, timeout = sys.argv[2:7]
        c = client(cid)
        got = []
        lock = threading.Lock()
        c.on_message = lambda _c, _u, m: (lock.acquire(), got.append(m.payload.decode()), lock.release())
        info = connect(c, host, port, True)
        print(json.dumps(info), flush=True)
        deadline = time.time() + float(timeout)
        while time.time() < deadline:
            with lock:
                if len(got) >= int(count):
                    break
            time.sleep(0.05)
        time.sleep(0.3)  # let the PUBACKs go out before leaving
        c.disconnect()
        c.loop_stop()
        for p in got:
            print(p, flush=True)
    elif cmd == "subs":
        host, port, count = sys.argv[2:5]
        c = client("subs-%d" % time.time_ns())
        connect(c, host, port, False)
        codes = []
        acked = threading.Event()

        def on_subscribe(_c, _u, _mid, reasons, _p):
            codes.extend(r.value for r in reasons)
            acked.set()

        c.on_subscribe = on_subscribe
        c.subscribe([("sensornet/temperature/s%d" % i, 1) for i in range(int(count))])
        if not acked.wait(10):
            sys.exit("no SUBACK within 10 s")
        print(json.dumps({"codes": codes}), flush=True)
        c.disconnect()
        c.loop_stop()
    elif cmd == "pipeline":
        host, port, topic, count, bad = sys.argv[2:7]
        count, bad = int(count), int(bad)
        c = client("pipe-%d" % time.time_ns())
        c.max_inflight_messages_set(256)
        got = {}
        lock = threading.Lock()
        def on_publish(_c, _u, mid, reason, _p):
            with lock:
                got[mid] = reason.value

        c.on_publish = on_publish
        info = connect(c, host, port, False)
        mids = []
        for i in range(count):
            payload = "warm" if i == bad else "%d" % (10 + i % 50)
            mids.append(c.publish(topic, payload, qos=1).mid)
        deadline = time.time() + 30
        while time.time() < deadline:
            with lock:
                if len(got) >= count:
                    break
            time.sleep(0.02)
        c.disconnect()
        c.loop_stop()
        info["codes"] = [got.get(m) for m in mids]
        print(json.dumps(info), flush=True)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
