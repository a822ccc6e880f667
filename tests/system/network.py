# Guest networking inside the test host for Tern's system tests: shell snippets that make a bridge
# and a TAP device for the VMM (for run_cases(..., setup=SETUP) in vmm_session.py or
# testhost.run()), and for a checked TCP transfer between the test host and a guest. All
# addresses live inside the test host (a QEMU machine with no network of its own).
"""Shell snippets for guest networking inside the test host.

    from network import SETUP, HOST_IP, GUEST_IP, TAP, guest_static_ip
    run_cases(cases, setup=SETUP)     # br0 172.31.0.1/16 with tap0 attached, both up

Busybox in the test host has everything used here: `ip link add br0 type bridge`, `tunctl`,
`ip link set tap0 master br0`, `nc -l -p PORT`, `ping`, `sha256sum`, `timeout`.
"""

from __future__ import annotations

BRIDGE = "br0"
TAP = "tap0"          # persistent TAP device (IFF_TAP | IFF_NO_PI) for the VMM to attach to
HOST_IP = "172.31.0.1"
GUEST_IP = "172.31.0.2"
PREFIX_LEN = 16
NETMASK = "255.255.0.0"

# Loads tun + bridge (on demand: the test host does not load them at boot), creates br0 with
# HOST_IP and the TAP device TAP attached to it, all up. Exits the command's shell with status 97
# if any step fails, so a broken setup is not mistaken for a broken device.
SETUP = f"""\
{{ modprobe -a tun bridge &&
  ip link add {BRIDGE} type bridge &&
  ip addr add {HOST_IP}/{PREFIX_LEN} dev {BRIDGE} &&
  ip link set {BRIDGE} up &&
  tunctl -t {TAP} >/dev/null &&
  ip link set {TAP} master {BRIDGE} &&
  ip link set {TAP} up; }} || {{ echo "network setup failed"; exit 97; }}"""


def guest_static_ip(interface: str = "eth0") -> str:
    """Shell for the busybox test guest (tools/guest/init): GUEST_IP/PREFIX_LEN on `interface`, up,
    with a default route through the test host."""
    return (f"ip link set lo up && ip addr add {GUEST_IP}/{PREFIX_LEN} dev {interface} && "
            f"ip link set {interface} up && ip route add default via {HOST_IP}")


def kernel_ip_arg(interface: str = "") -> str:
    """Kernel command line `ip=` for the Debian image (tools/image/build): systemd-network-generator
    turns it into a systemd-networkd config. interface '' means every interface."""
    return f"ip={GUEST_IP}::{HOST_IP}:{NETMASK}::{interface}:off"


def receive(port: int, path: str, seconds: int = 120) -> str:
    """Shell: a background listener that stores what one TCP connection to `port` sends into
    `path`, then exits (killed after `seconds`). Start it before the peer connects, `wait` for it
    after. Busybox nc, test host or guest alike; the data goes straight from the socket to `cat`
    (`nc -e`): a plain `nc -l >path` would close its own side when its stdin ends, and busybox
    `nc HOST PORT <file` on the other end stops sending as soon as it sees that."""
    return f"timeout {seconds} nc -l -p {port} -e sh -c 'cat >{path}' </dev/null &"


def send(host: str, port: int, path: str, seconds: int = 120) -> str:
    """Shell: send the file `path` to a `receive` listener at host:port (fails after `seconds`)."""
    return f"timeout {seconds} nc {host} {port} <{path}"


def sha256_of(path: str) -> str:
    """Shell printing just the SHA-256 of `path` (busybox and coreutils sha256sum alike)."""
    return f"sha256sum {path} | cut -d' ' -f1"
