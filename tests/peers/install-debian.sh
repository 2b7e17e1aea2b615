#!/bin/sh
# Install the real SMTP peers the interoperability tests talk to (Debian 12,
# run as root).  Postfix and Exim conflict as Debian packages (both provide
# mail-transport-agent), so Postfix is installed and Exim's daemon package is
# only unpacked (apt-get download + dpkg -x) under PEERS_DIR; the tests run it
# from there with exim_path pointing at the unpacked binary.
#
#   tests/peers/install-debian.sh            # PEERS_DIR defaults to /opt/smtpproto-peers
#
# Nothing is started here: each test session starts the peers it needs on
# loopback and stops them by pid.
set -eu
PEERS_DIR=${SMTPPROTO_PEERS_DIR:-/opt/smtpproto-peers}
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
    echo "install-debian.sh: must run as root (it uses apt-get)" >&2
    exit 2
fi

echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    postfix libsasl2-modules sasl2-bin \
    swaks libnet-ssleay-perl libio-socket-inet6-perl libauthen-sasl-perl \
    curl msmtp openssl ca-certificates \
    libgnutls-dane0 libidn12 libnsl2 libdb5.3 > /dev/null

# Exim: unpack the daemon beside Postfix instead of installing it.
if [ ! -x "$PEERS_DIR/exim/usr/sbin/exim4" ]; then
    work=$(mktemp -d); chmod 755 "$work"   # apt downloads as _apt
    (cd "$work" && apt-get download -qq exim4-daemon-light)
    mkdir -p "$PEERS_DIR/exim"
    dpkg -x "$work"/exim4-daemon-light_*.deb "$PEERS_DIR/exim"
    rm -rf "$work"
fi
getent group Debian-exim > /dev/null || groupadd --system Debian-exim
getent passwd Debian-exim > /dev/null || useradd --system --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin -g Debian-exim Debian-exim

# Postfix's log daemon (postlogd) reads a Unix datagram socket; with the
# kernel's default queue of 10 datagrams a busy start-up can stall Postfix.
sysctl -q -w net.unix.max_dgram_qlen=512 || echo "install-debian.sh: could not raise net.unix.max_dgram_qlen" >&2

echo "peers installed: postfix $(postconf -d -h mail_version), exim in $PEERS_DIR/exim"
