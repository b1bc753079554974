#!/bin/sh
# with_routable_interface.sh COMMAND [ARG...]: run COMMAND in a private network namespace that has loopback and a
# routable-looking interface (10.254.0.2/24 on a veth pair, with a default route), as an ordinary machine has. The
# suite must pass here too, with every server it starts on 127.0.0.1 (tests/test_cluster.py checks the binds):
#     sh tests/with_routable_interface.sh python -m pytest -q
# Needs root and iproute2; install first, nothing outside the namespace is reachable from it.
exec unshare -n -- sh -c '
  ip link set lo up &&
  ip link add veth0 type veth peer name veth1 &&
  ip addr add 10.254.0.2/24 dev veth0 &&
  ip link set veth1 up && ip link set veth0 up &&
  ip route add default via 10.254.0.1 dev veth0 onlink &&
  exec "$@"' with_routable_interface "$@"
