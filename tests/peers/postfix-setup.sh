#!/bin/sh
# Build a private Postfix test instance under BASE_DIR (no systemd, no /etc/postfix edits).
#   listens 127.0.0.1:PORT and [::1]:PORT; start: postfix -c BASE_DIR/conf start-fg; stop: postfix -c BASE_DIR/conf stop
#   test.example     -> Maildir under BASE_DIR/mail/<user>/  (virtual(8), uid nobody)
#   discard.example  -> discard(8)
#   STARTTLS (CERT/KEY), AUTH PLAIN/LOGIN (Cyrus sasldb, user test@test.example / secret)
set -e
B=${1:?usage: postfix-setup.sh BASE_DIR CERT KEY [PORT]}
CERT=${2:?cert}; KEY=${3:?key}; PORT=${4:-2525}
C=$B/conf
mkdir -p $C $C/sasl $B/queue $B/data $B/mail $B/sasl
chown nobody:nogroup $B/mail
chown postfix:postfix $B/data

cat > $C/main.cf <<EOF
compatibility_level = 3.6
queue_directory = $B/queue
data_directory  = $B/data
command_directory = /usr/sbin
daemon_directory  = /usr/lib/postfix/sbin
shlib_directory   = /usr/lib/postfix
meta_directory    = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = $B/maillog
maillog_file_prefixes = /var, /dev/stdout, $B
myhostname = mx.test.example
mydomain = test.example
myorigin = test.example
mydestination =
inet_protocols = all
mynetworks = 127.0.0.0/8 [::1]/128
# no DNS lookups on loopback tests
smtp_host_lookup = native
disable_dns_lookups = yes
smtpd_peername_lookup = no
biff = no
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = test.example
virtual_mailbox_base = $B/mail
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
relay_domains = discard.example
transport_maps = inline:{discard.example=discard:}
# nothing ever leaves loopback: any non-local destination bounces immediately
default_transport = error:5.7.1 outbound delivery disabled in test instance
relay_transport = error:5.7.1 outbound delivery disabled in test instance
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_tls_cert_file = $CERT
smtpd_tls_key_file  = $KEY
smtpd_tls_security_level = may
smtpd_tls_auth_only = no
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
# Debian's postfix reads \$config_directory/sasl/smtpd.conf (ignores cyrus_sasl_config_path)
cyrus_sasl_config_path = $C/sasl
smtputf8_enable = yes
message_size_limit = 52428800
virtual_mailbox_limit = 0
mailbox_size_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_error_sleep_time = 0
EOF

cat > $C/master.cf <<EOF
127.0.0.1:$PORT inet n - n - - smtpd
[::1]:$PORT     inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF

# Cyrus SASL (sasldb) for AUTH PLAIN/LOGIN/CRAM-MD5
cat > $C/sasl/smtpd.conf <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: $B/sasl/sasldb2
mech_list: PLAIN LOGIN CRAM-MD5
EOF
echo secret | saslpasswd2 -p -f $B/sasl/sasldb2 -c -u test.example test
chown postfix:postfix $B/sasl/sasldb2; chmod 640 $B/sasl/sasldb2
# private key must be readable by smtpd (runs as postfix)
chgrp postfix $KEY

postfix -c $C check
echo "setup ok"
