#!/usr/bin/env python3
"""Delay and drop packets queued by iptables' NFQUEUE target: a stand-in for
`tc qdisc ... netem delay D loss L` on kernels built without sch_netem.

    nfq-delay.py QUEUE_NUM DELAY_MS LOSS_PERCENT

Run it in the namespace whose iptables rules send packets to queue QUEUE_NUM
(for example `iptables -t mangle -A POSTROUTING -o wan -j NFQUEUE
--queue-num 0`). Each packet is dropped with probability LOSS_PERCENT/100,
otherwise accepted DELAY_MS after it was queued (order kept). Only packet
metadata crosses to user space (NFQNL_COPY_META). Pure standard library:
nfnetlink_queue spoken over a raw netlink socket. Stops on SIGTERM/SIGINT.
"""

import heapq
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NF_DROP = 0
NF_ACCEPT = 1


def attr(kind, data):
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * ((4 - n % 4) % 4)


def message(kind, flags, seq, queue, attrs):
    # nfgenmsg: family, version 0, resource id (the queue) in network order.
    payload = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: nfq-delay.py QUEUE_NUM DELAY_MS LOSS_PERCENT")
    queue = int(sys.argv[1])
    delay = float(sys.argv[2]) / 1000.0
    loss = float(sys.argv[3]) / 100.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, 0))
    config = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
    verdict_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
    for seq, a in enumerate(
        [
            attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)),
            attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)),
        ],
        start=1,
    ):
        sock.send(message(config, NLM_F_REQUEST | NLM_F_ACK, seq, queue, [a]))
        reply = sock.recv(65536)
        kind = struct.unpack_from("=H", reply, 4)[0]
        err = struct.unpack_from("=i", reply, 16)[0] if kind == NLMSG_ERROR else 0
        if err != 0:
            sys.exit(f"nfq-delay: binding queue {queue} failed: errno {-err}")
    print(f"nfq-delay: queue {queue}: delay {delay * 1000:.0f} ms, loss {loss * 100:g}%",
          flush=True)

    pending = []  # (release time, order, packet id)
    order = 0
    seq = 100
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else 1.0
        ready, _, _ = select.select([sock], [], [], timeout)
        if ready:
            try:
                data = sock.recv(1 << 16)
            except OSError:  # ENOBUFS: the kernel dropped some; carry on
                data = b""
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if length < 16:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    a = off + 20  # netlink header + nfgenmsg
                    while a + 4 <= off + length:
                        alen, akind = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        if akind & 0x7FFF == NFQA_PACKET_HDR:
                            pid = struct.unpack_from("!I", data, a + 4)[0]
                            if random.random() < loss:
                                seq += 1
                                sock.send(message(verdict_type, NLM_F_REQUEST, seq, queue,
                                                  [attr(NFQA_VERDICT_HDR,
                                                        struct.pack("!II", NF_DROP, pid))]))
                            else:
                                order += 1
                                heapq.heappush(pending, (time.monotonic() + delay, order, pid))
                            break
                        a += (alen + 3) & ~3
                off += (length + 3) & ~3
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, pid = heapq.heappop(pending)
            seq += 1
            sock.send(message(verdict_type, NLM_F_REQUEST, seq, queue,
                              [attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, pid))]))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
