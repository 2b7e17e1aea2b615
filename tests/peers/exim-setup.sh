#!/bin/sh
# Build a private Exim test instance under BASE_DIR from exim.conf.in.
#   EXIM=path/to/exim4 exim-setup.sh BASE_DIR CERT KEY
#   then: $EXIM -C BASE_DIR/exim.conf -bdf -q1m -oX PORT   (stop by pid)
set -e
EXIM=${EXIM:-exim4}
B=${1:?usage: exim-setup.sh BASE_DIR CERT KEY  (then: exim4 -C BASE_DIR/exim.conf -bdf -q1m -oX PORT)}
CERT=${2:?cert}; KEY=${3:?key}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p $B/spool $B/log $B/mail
sed -e "s|@B@|$B|g" -e "s|@EXIM@|$EXIM|g" $HERE/exim.conf.in > $B/exim.conf
cp "$CERT" $B/tls-cert.pem; cp "$KEY" $B/tls-key.pem
chown Debian-exim:Debian-exim $B/spool $B/log $B/mail $B/tls-key.pem; chmod 640 $B/tls-key.pem
chown root:root $B/exim.conf; chmod 644 $B/exim.conf
"$EXIM" -C $B/exim.conf -bV > /dev/null && echo "config ok"
