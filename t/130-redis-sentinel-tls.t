#!/usr/bin/perl
# Redis Sentinel over TLS and with AUTH (issue 16 items 2 and 3; decisions
# 036, 041 and 046). A master, one replica and three sentinels started here
# on 127.0.0.1, every one of them on a TLS port that wants a client
# certificate of the test's CA (a plain port too, for the test's own
# client only): the sentinels monitor the master's TLS port and talk to
# it, to the replica and to each other over TLS (tls-replication), so the
# addresses they name are TLS ports. The certificates name "redis.test"
# only (no IP entry): a sentinel names the master by address, and the
# name verified is im_redis_ssl_name, for the sentinels and the master
# alike. The sentinels want a password (requirepass for their default
# user, which they use among themselves) and have an ACL user for the
# nodes that may ask where the master is and hear +switch-master, nothing
# more; the master and replica have an ACL user for the nodes.
#
#   - two nodes find the master through the sentinels (TLS, verified as
#     redis.test, the sentinels' ACL user, the master's ACL user):
#     a message acked and delivered across the nodes; the sentinels and
#     the master list the nodes' connections as those users;
#   - kill -9 of the master under traffic with im_redis_wait 1, 0.3 s
#     after the replica's link was cut (as in t/126): the sentinels
#     promote the replica, the nodes follow over TLS, service resumes,
#     and no acked message is lost (asserted; the counts and the time
#     until service resumed are a note line);
#   - the sentinels' requirepass with no ACL user (AUTH password): works;
#   - a wrong sentinel password: the log names the sentinel and "AUTH
#     failed", logins are answered CONNECT_ACK 2 (no master known);
#   - im_redis_ssl_name that the certificates do not carry: the log names
#     the sentinel and the mismatch, logins are answered 2;
#   - the wrong CA: "TLS certificate verify failed", naming the sentinel.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port free_port wait_until/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Cluster qw/login/;
use IM::Setup qw/make_ca/;
use IM::Failover;

my $t = Test::Nginx->new()->has(qw/http redis/);    # helpers and daemons
my $d = $t->testdir;
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");

my $NAME = 'immaster';
my $SNAME = 'redis.test';

my %TIMERS = (
    # no check here is about pings or re-pushes
    im_ping_interval   => '300s',
    im_ping_timeout    => '5s',
    im_repush_interval => '60s',
    im_close_grace     => '1s',
    im_redis_timeout   => '3s',
);

###############################################################################
# a CA, the servers' certificate (DNS:redis.test only), the node's, and a
# second CA that signed nothing of this

make_ca($t, 'ca', who => [qw/redis node/], san => "DNS:$SNAME");
make_ca($t, 'other');

# the TLS settings of every Redis and sentinel here: their certificate
# serves as their client certificate too (replication, the sentinels'
# links)
my %TLS = (
    'tls-cert-file'    => "$d/redis.crt",
    'tls-key-file'     => "$d/redis.key",
    'tls-ca-cert-file' => "$d/ca.crt",
    'tls-auth-clients' => 'yes',
    'tls-replication'  => 'yes',
);

###############################################################################
# master and replica, on TLS ports; the nodes' ACL user on both

my @SYNC = ('--repl-diskless-sync-delay', '0');
my @NODEUSER = ('--user', 'imnode', 'on', '>node-secret', '~*', '&*',
    '+@all');
my (@redis, %tls_of, %by_tls);

sub tls_redis {
    my (@more) = @_;
    my $tls = free_port();
    my $r = eval {
        IM::Redis->new(t => $t, args => [@SYNC, '--tls-port', $tls,
            (map { ("--$_", $TLS{$_}) } sort keys %TLS), @NODEUSER, @more]);
    };
    plan(skip_all => "redis-server without TLS: $@") unless $r;
    $tls_of{$r} = $tls;
    $by_tls{$tls} = $r;
    push @redis, $r;
    return $r;
}

tls_redis();
tls_redis('--replicaof', '127.0.0.1', $tls_of{$redis[0]});

sub linked {
    my ($replica) = @_;
    return 0 unless $replica;
    my $info = eval { $replica->cmd(INFO => 'replication') } // '';
    return $info =~ /role:slave/ && $info =~ /master_link_status:up/;
}

ok(wait_until(sub { linked($redis[1]) }, 30),
    'the replica is linked over TLS') or BAIL_OUT('no replication: '
    . $redis[1]->log);

###############################################################################
# three sentinels on TLS ports, with a password and the nodes' ACL user

my $SPASS = 'sentinel-admin';
# what a node asks a sentinel, and nothing more
my $WATCH = 'user imwatch on >watch-secret -@all +ping +subscribe'
    . ' +sentinel|get-master-addr-by-name &+switch-master';
my (@sentinels, @stls);
for my $i (1 .. 3) {
    my ($port, $tls) = (free_port(), free_port());
    my $dir = "$d/sentinel$i";
    mkdir $dir or die "mkdir $dir: $!\n";
    my $tlsconf = join '', map { "$_ $TLS{$_}\n" } sort keys %TLS;
    $t->write_file("sentinel$i/sentinel.conf", <<"EOF");
port $port
tls-port $tls
$tlsconf
bind 127.0.0.1
daemonize no
protected-mode no
dir $dir
logfile $dir/sentinel.log
requirepass $SPASS
sentinel sentinel-pass $SPASS
$WATCH
sentinel monitor $NAME 127.0.0.1 $tls_of{$redis[0]} 2
sentinel down-after-milliseconds $NAME 1000
sentinel failover-timeout $NAME 5000
sentinel parallel-syncs $NAME 1
EOF
    $t->run_daemon($IM::Redis::REDIS, "$dir/sentinel.conf", '--sentinel');
    # a RESP client on the sentinel's plain port (the test's only)
    push @sentinels, IM::Redis->new(t => $t, port => $port, no_start => 1,
        password => $SPASS);
    push @stls, $tls;
}

# what every sentinel says of the master: its TLS port, when they agree
sub master_port { IM::Failover::master_port(\@sentinels, $NAME) }

# the sentinels know each other and a replica in good health
sub settled { IM::Failover::settled(\@sentinels, $NAME) }

ok(wait_until(\&settled, 60), 'three sentinels agree over TLS on the '
    . 'master and its replica') or BAIL_OUT('sentinels not settled: '
    . explain([map { eval { $_->cmd(SENTINEL => 'master', $NAME) } }
        @sentinels]));
is(master_port(), $tls_of{$redis[0]}, 'the sentinels name the TLS port');

my $SENTINELS = join ' ', map { "127.0.0.1:$_" } @stls;

# the nodes' main context: the sentinels, their ACL user, the master's ACL
# user, TLS verified as redis.test with the node's client certificate
sub main_conf {
    my (%o) = @_;
    return "im_redis_sentinel $SENTINELS;\n"
        . "im_redis_sentinel_master $NAME;\n"
        . (defined $o{suser} ? '' : "im_redis_sentinel_user imwatch;\n")
        . 'im_redis_sentinel_password ' . ($o{spass} // 'watch-secret')
        . ";\n"
        . "im_redis_user imnode;\n"
        . "im_redis_password node-secret;\n"
        . "im_redis_ssl on;\n"
        . 'im_redis_ssl_trusted_certificate ' . ($o{ca} // "$d/ca.crt")
        . ";\n"
        . 'im_redis_ssl_name ' . ($o{name} // $SNAME) . ";\n"
        . "im_redis_ssl_certificate $d/node.crt;\n"
        . "im_redis_ssl_certificate_key $d/node.key;\n"
        . ($o{more} // '');
}

sub node {
    my (%o) = @_;
    return IM::Cluster::node(workers => 1, uc => $uc,
        %o, timers => { %TIMERS, %{$o{timers} || {}} });
}

# a login, tried again while the node has no master yet (code 2)
sub login_ok { IM::Failover::login_ok(@_) }

###############################################################################
# found and used over TLS, as the ACL users

my $MAIN = main_conf(more => "im_redis_wait 1 1s;\n");
my $na = node(name => 'a', port => 9095, main => $MAIN);
my $nb = node(name => 'b', port => 9096, main => $MAIN);
$na->run();
$nb->run();

{
    my $mp = $tls_of{$redis[0]};
    ok($na->wait_for_log(qr/im redis: master "$NAME" is at 127\.0\.0\.1:$mp,/
        . qr/ redis: 127\.0\.0\.1:\d+ \(sentinel\)/),
        'the node learnt the master\'s TLS port from a sentinel');
    my ($s, $code) = login_ok($na, 26001);
    my ($r, $code2) = login_ok($nb, 26002);
    is($code, 0, 'TLS: a login on node a');
    is($code2, 0, 'TLS: a login on node b');
    my $id = $s->publish(26002, 'across the nodes over TLS');
    ok($s->expect(cmd => PUB_ACK, msgid => $id)
        && $r->expect(cmd => PUBLISH, msgid => $id),
        'TLS: a message acked (WAIT on) and delivered across the nodes');

    my $list = join '', map { eval { $_->cmd(CLIENT => 'LIST') } // '' }
        @sentinels;
    my $n = () = $list =~ /\buser=imwatch\b/g;
    ok($n >= 2, "the sentinels list the nodes' connections as imwatch ($n)")
        or diag($list);
    $list = $redis[0]->cmd(CLIENT => 'LIST');
    $n = () = $list =~ /\buser=imnode\b/g;
    ok($n >= 4, "the master lists the nodes' connections as imnode ($n)")
        or diag($list);
    $_->close(1000) for $s, $r;
}

###############################################################################
# kill -9 of the master under traffic, TLS and im_redis_wait 1 on

{
    my ($S, $L, $Y) = (26101, 26102, 26103);
    my $old = $by_tls{master_port() // 0}
        or BAIL_OUT('the sentinels name no master');

    my ($s) = login_ok($na, $S, auto_ack => 0);
    my ($l) = login_ok($nb, $L);
    ok($s && $l, 'failover: sender on node a, recipient on node b');

    # as in t/126: the replica's link is cut first, so that what the
    # master answers in its last 0.3 s is on no replica: WAIT must refuse
    # it
    my $r = IM::Failover::run(sender => $s, live => $l, live_uid => $L,
        offline_uid => $Y, tag => 'TLS failover, im_redis_wait 1 1s',
        old => $old, old_port => $tls_of{$old},
        master_port => \&master_port,
        cut_after => 100, resume_after => 50, resume_secs => 1,
        relogin => sub { login_ok($nb, $_[0]) },
        # the new master's replica, over TLS (its tls-replication)
        switched => sub {
            $old->start;
            eval { $old->cmd(REPLICAOF => '127.0.0.1', $_[0]) };
        });

    ok($r->{killed} && $r->{switched}, 'failover: the master was killed '
        . 'and the sentinels promoted the replica');
    ok($r->{resumed},
        'failover: messages sent after the kill are acked again');
    is($r->{unanswered}, 0, 'failover: every publish answered, an ack or '
        . "a refusal ($r->{sent})");
    my $lost = $r->{lost};
    note($r->{line});
    diag($r->{line}) if $ENV{IM_SENTINEL_FIGURES};

    is($lost, 0, "failover: no acked message lost ($lost of "
        . "$r->{acked})");
    my $np = master_port() // 0;
    my $re = qr/im redis: master "$NAME" is now at 127\.0\.0\.1:$np /;
    ok((grep { $_->error_log =~ $re } $na, $nb) == 2,
        'failover: both nodes went to the new master\'s TLS port');
    $s->close(1000) if $s;
}

$na->stop();
$nb->stop();

###############################################################################
# the sentinels' requirepass alone (AUTH password, their default user)

{
    my $n = node(name => 'c', port => 9095,
        main => main_conf(suser => '', spass => $SPASS));
    $n->run();
    my ($c, $code) = login_ok($n, 26211);
    is($code, 0, 'sentinels\' requirepass, no ACL user: logins work');
    $c->close(1000) if $c;
    $n->stop();
}

###############################################################################
# refused: a wrong sentinel password, a name the certificates do not carry,
# the wrong CA; no master is known, logins are answered 2

for my $case (
    [ 'wrong sentinel password', main_conf(spass => 'not-the-password'),
        qr/AUTH failed: WRONGPASS[^\n]* while logging in to Redis, redis: /
        . qr/127\.0\.0\.1:(\d+) \(sentinel\)/ ],
    [ 'a name the certificates do not carry', main_conf(name => 'other.test'),
        qr/TLS certificate does not match "other\.test"[^\n]* redis: /
        . qr/127\.0\.0\.1:(\d+) \(sentinel\)/ ],
    [ 'the wrong CA', main_conf(ca => "$d/other.crt"),
        qr/TLS certificate verify failed: [^\n]* redis: /
        . qr/127\.0\.0\.1:(\d+) \(sentinel\)/ ],
) {
    my ($name, $main, $re) = @$case;
    my $n = node(name => 'c', port => 9095, main => $main);
    $n->run();
    my $port = $n->wait_for_log($re);
    ok($port && grep({ $_ == $port } @stls),
        "$name: the log says why, naming a sentinel") or diag($n->error_log);
    my ($c, $code) = login($n, 26201);
    is($code, 2, "$name: logins answered 2 (no master known)");
    $c->close if $c;
    unlike($n->error_log, qr/im redis: master "$NAME" is at/,
        "$name: no master learnt");
    $n->stop();
}

$t->done_testing();
