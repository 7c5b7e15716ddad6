#!/usr/bin/perl
# Redis over TLS, with an ACL user, on a unix socket and by host name
# (issue 16 items 1 and 2; decisions 035 and 036). One redis-server with a
# plain port (the test's own client), a TLS port that wants a client
# certificate, and a unix socket; a CA, the server's and the node's
# certificates made here with openssl, and a second CA that signed nothing
# of this. Each case is a fresh nginx on the same Redis:
#
#   - TLS, verified against the CA by the address 127.0.0.1, with the
#     node's client certificate: login, a message acked and delivered;
#   - TLS by the host name localhost (the SNI and the name verified):
#     the same;
#   - TLS with the wrong CA: logins answered CONNECT_ACK 2, and the error
#     log names the address and "TLS certificate verify failed";
#   - ACL user with a wrong password: logins answered 2, the log names the
#     address and "AUTH failed: WRONGPASS";
#   - a port where nothing listens: logins answered 2, the log names the
#     address and "Connection refused";
#   - ACL user with its password on the unix socket: login and message;
#     CLIENT LIST shows the module's connections logged in as that user;
#   - nginx -t refuses im_redis_ssl with verification and no CA, and
#     im_redis_user without a password.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port free_port wait_until/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf make_ca/;

my $t = Test::Nginx->new()->has(qw/http redis/);
my $d = $t->testdir;

make_ca($t, 'ca', who => [qw/redis node/]);
make_ca($t, 'other');

my $tls_port = free_port();
my $sock = "$d/redis.sock";
my $redis = eval {
    IM::Redis->new(t => $t, args => [
        '--tls-port', $tls_port,
        '--tls-cert-file', "$d/redis.crt",
        '--tls-key-file', "$d/redis.key",
        '--tls-ca-cert-file', "$d/ca.crt",
        '--tls-auth-clients', 'yes',
        '--unixsocket', $sock, '--unixsocketperm', '777',
    ]);
};
plan(skip_all => "redis-server without TLS: $@") unless $redis;

$redis->cmd(ACL => 'SETUSER', 'imnode', 'on', '>im-node-secret', '~*',
    '&*', '+@all');

my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");

# nginx on this Redis with these main-context directives
sub start {
    my ($addr, $main) = @_;
    my $r = bless { addr => $addr }, 'Addr';
    write_conf($t, redis => $r, uc => $uc, stream => 0, main => $main);
    $t->run();
}

sub stop { $t->stop() }

sub client {
    return IM::Client->new(port => port(9095), path => '/ws',
        auto_pong => 1, uid => $_[0]);
}

# two users log in; one sends the other a message
sub works {
    my ($name) = @_;
    my $a = client(23001);
    my $b = client(23002);
    is($a->login('u23001', 'pw'), 0, "$name: login");
    is($b->login('u23002', 'pw'), 0, "$name: second login");
    my $id = $a->publish(23002, "over $name");
    ok($a->expect(cmd => PUB_ACK, msgid => $id), "$name: acked");
    my $m = $b->expect(cmd => PUBLISH, msgid => $id);
    ok($m && $m->{payload} =~ /over \Q$name\E/, "$name: delivered");
}

# the log says why, naming the address; logins meanwhile get code 2
sub refused {
    my ($name, $mark, $re) = @_;
    ok($t->wait_for_log($re, from => $mark), "$name: the log says why")
        or diag($t->error_log($mark));
    my $c = client(23003);
    is($c->login('u23003', 'pw'), 2, "$name: login answered 2");
}

my $TLS = "im_redis_ssl on;\n"
    . "im_redis_ssl_certificate $d/node.crt;\n"
    . "im_redis_ssl_certificate_key $d/node.key;\n";

# -- TLS by address (room for the bulk below at the recipient)
start("127.0.0.1:$tls_port", $TLS
    . "im_redis_ssl_trusted_certificate $d/ca.crt;\nim_send_buffer 16m;");
works('TLS to 127.0.0.1');

# much at once over TLS: 300 messages of 20 KB to an offline uid (6 MB of
# RPUSHes, written in pieces), then its inbox in one LRANGE
{
    my $a = client(23011);
    is($a->login('u23011', 'pw'), 0, 'TLS bulk: sender logs in');
    my $big = 'x' x 20000;
    my @ids = map { $a->publish(23012, "$_ $big") } 1 .. 300;
    my $acked = 0;
    for my $id (@ids) {
        $acked++ if $a->expect(cmd => PUB_ACK, msgid => $id, timeout => 30);
    }
    is($acked, 300, 'TLS bulk: 300 of 20 KB acked');
    my $b = client(23012);
    $b->auto_ack(1);
    is($b->login('u23012', 'pw'), 0, 'TLS bulk: recipient logs in');
    my @got;
    while (@got < 300) {
        my $m = $b->expect(cmd => PUBLISH, timeout => 30) or last;
        push @got, $m->{msgid};
    }
    is_deeply(\@got, \@ids, 'TLS bulk: all 300 read from the inbox, in order');
}
stop();

# -- TLS by host name: SNI and the verified name are "localhost"
start("localhost:$tls_port",
    $TLS . "im_redis_ssl_trusted_certificate $d/ca.crt;");
works('TLS to localhost');
stop();

# -- TLS, the wrong CA
my $mark = $t->log_mark;
start("127.0.0.1:$tls_port",
    $TLS . "im_redis_ssl_trusted_certificate $d/other.crt;");
refused('wrong CA', $mark,
    qr/TLS certificate verify failed: .* redis: 127\.0\.0\.1:$tls_port \(/);
stop();

# -- ACL user, wrong password
$mark = $t->log_mark;
start($redis->addr,
    "im_redis_user imnode;\nim_redis_password not-the-password;");
my $raddr = quotemeta $redis->addr;
refused('wrong password', $mark,
    qr/AUTH failed: WRONGPASS.* redis: $raddr/);
stop();

# -- nothing listens there
my $nowhere = free_port();
$mark = $t->log_mark;
start("127.0.0.1:$nowhere", '');
refused('connection refused', $mark, qr/Connection\ refused\)\ while
    \ connecting\ to\ Redis,\ redis:\ 127\.0\.0\.1:$nowhere\ \(/x);
stop();

# -- ACL user, its password, on the unix socket
start("unix:$sock", "im_redis_user imnode;\nim_redis_password im-node-secret;");
works('ACL user on a unix socket');
my $list = $redis->cmd(CLIENT => 'LIST');
my $n = () = $list =~ /\buser=imnode\b/g;
ok($n >= 2, "CLIENT LIST: the module's connections as imnode ($n)")
    or diag($list);
stop();

# -- refused configurations
for my $case (
    [ "im_redis_ssl on;", qr/no im_redis_ssl_trusted_certificate/ ],
    [ "im_redis_user imnode;", qr/im_redis_user needs im_redis_password/ ],
) {
    my ($main, $re) = @$case;
    write_conf($t, redis => $redis, uc => $uc, stream => 0, main => $main);
    my $out = `'$Test::Nginx::NGINX' -t -p '$d/' -c '$d/nginx.conf' 2>&1`;
    like($out, $re, "nginx -t refuses: $main");
}

$t->allow_alerts(qr/\[emerg\]/);
$t->done_testing();

package Addr;
sub addr { $_[0]{addr} }
