#!/usr/bin/perl
# Group sets on a Redis of their own: im_group_redis (issue 16 item 4;
# docs/decisions/045-group-redis.md). A data Redis (inboxes, pub/sub,
# presence) and a second redis-server holding the sets im_group:<gid> in
# database 2 (im_group_db 2):
#
#   - nginx -t: the address forms of im_redis (a host name, IPv6, unix:),
#     its parameters, what does not go together; with im_redis_cluster,
#     im_group_db 2 is allowed once im_group_redis names the sets' Redis;
#   - group and part-group messages follow the sets of the group Redis; a
#     1:1 message works; the offline member's inbox is on the data Redis;
#     the data Redis holds no im_group key and runs no SSCAN, the group
#     Redis holds no im: key (no inbox), and its SSCANs come on database 2;
#   - the group Redis stopped: group and part-group messages refused with
#     <<10, Cmd, MsgId>> (counted as im_refused_total{reason="store"}) and
#     pushed to nobody, 1:1 messages and logins
#     work, the error log names the group Redis's address and the cause;
#     started again: groups work again;
#   - the group Redis over TLS (verified, a client certificate) with an ACL
#     user that may only read the sets; a wrong password: the log says
#     "AUTH failed" naming the address, groups refused, 1:1 works;
#   - Redis Cluster (three masters) with im_group_redis: the sets are read
#     from the group Redis (the cluster has none and runs no SSCAN); the
#     group Redis stopped and started: groups refused then served, 1:1
#     works, and the slot map is not read again for it.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port free_port wait_until http_get/;
use IM::Redis;
use IM::RedisCluster;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf make_ca/;

my $t = Test::Nginx->new()->has(qw/http redis/);
my $d = $t->testdir;
my $data = IM::Redis->new(t => $t);
my $grp = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");

my $GDB = 2;
my $GID = 128;
my $gaddr = $grp->addr;

# no re-push or ping within the test; Redis connections' timers short
my $QUIET = "im_repush_interval 60s;\nim_ping_interval 300s;\n"
    . "im_redis_timeout 3s;\n";

sub hex_of { defined $_[0] ? hexdump($_[0]) : 'undef' }

###############################################################################
# nginx -t

sub nginx_t {
    my ($name, $main) = @_;
    # not a %%PORT_%% placeholder: run() would wait for it to listen
    my $free = free_port();
    $t->write_file_expand("t-$name.conf", <<"EOF");
%%TEST_GLOBALS%%
$main
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:$free;
        location /ws { im_websocket; im_auth /_auth; }
        ${\ $uc->auth_location }
    }
}
EOF
    my $nginx = $Test::Nginx::NGINX;
    my $out = `'$nginx' -t -p '$d/' -c '$d/t-$name.conf' 2>&1`;
    my $code = $? >> 8;
    $t->check_output($out);
    return ($code, $out);
}

{
    my $base = 'im_redis ' . $data->addr . ";\n";
    my %good = (
        address  => "im_group_redis $gaddr;\nim_group_db $GDB;",
        name     => 'im_group_redis localhost:6379;',
        ipv6     => 'im_group_redis [::1]:6379;',
        unix     => "im_group_redis unix:$d/none.sock;",
        acl      => 'im_group_redis 127.0.0.1 user=g password=s;',
        tls      => "im_group_redis localhost:6380 ssl;\n"
                    . 'im_redis_ssl_verify off;',
        cluster  => "im_redis_cluster on;\nim_group_redis $gaddr;\n"
                    . "im_group_db $GDB;",
    );
    # with Sentinel (no im_redis): the sets' Redis is not the master's
    $good{sentinel} = "im_redis_sentinel 127.0.0.1:26379;\n"
        . "im_redis_sentinel_master m;\nim_group_redis $gaddr;";
    for my $name (sort keys %good) {
        my ($code, $out) = nginx_t($name,
            ($name eq 'sentinel' ? '' : $base) . $good{$name});
        is($code, 0, "nginx -t: im_group_redis accepted ($name)")
            or diag($out);
    }

    my %bad = (
        param    => [ "im_group_redis $gaddr db=2;",
                      qr/invalid im_group_redis parameter "db=2"/ ],
        empty    => [ "im_group_redis $gaddr password=;",
                      qr/invalid im_group_redis parameter "password="/ ],
        user     => [ "im_group_redis $gaddr user=g;",
                      qr/user= needs password=/ ],
        sslname  => [ "im_group_redis $gaddr ssl_name=x;",
                      qr/ssl_name= needs ssl/ ],
        noca     => [ "im_group_redis $gaddr ssl;",
                      qr/im_redis_ssl_verify is on and no/ ],
        address  => [ 'im_group_redis 127.0.0.1:99999;',
                      qr/invalid im_group_redis address/ ],
        twice    => [ "im_group_redis $gaddr;\nim_group_redis $gaddr;",
                      qr/"im_group_redis" directive is duplicate/ ],
        cluster  => [ "im_redis_cluster on;\nim_group_db $GDB;",
                      qr/database 0 only/ ],
    );
    for my $name (sort keys %bad) {
        my ($main, $why) = @{$bad{$name}};
        my ($code, $out) = nginx_t("bad-$name", $base . $main);
        isnt($code, 0, "nginx -t: refused ($name)");
        like($out, $why, "nginx -t: ... saying why ($name)");
    }
}

###############################################################################
# one nginx on the data Redis, the sets on the group Redis

sub start {
    my ($redis, $main) = @_;
    write_conf($t, redis => $redis, uc => $uc, stream => 0,
        main => $QUIET . $main);
    $t->run();
}

sub user {
    my ($uid) = @_;
    my $c = IM::Client->new(port => port(9095), auto_pong => 1, uid => $uid,
        auto_ack => 1);
    my $code = $c->login("u$uid", 'pw');
    is($code, 0, "u$uid logs in");
    return $c;
}

sub sadd { $grp->select_cmd($GDB, 'SADD', "im_group:$_[0]", @_[1 .. $#_]) }

# a group message from $from, acked and delivered to each of @to
sub group_works {
    my ($name, $from, @to) = @_;
    my $id = $from->group_publish($GID, $name);
    my $ack = $from->expect(cmd => GROUP_PUB_ACK, msgid => $id);
    my $n = grep { $_->expect(cmd => GROUP_PUBLISH, msgid => $id) } @to;
    ok($ack && $n == @to, "$name: acked and delivered to " . scalar(@to));
    return $id;
}

# a group and a part-group message refused, exactly <<10, Cmd, MsgId>>,
# and pushed to nobody
sub groups_refused {
    my ($name, $from, @to) = @_;
    my $id = $from->group_publish($GID, "$name (group)");
    my $m = $from->next;
    is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PUBLISH, $id)),
        "$name: GROUP_PUBLISH refused <<10, 5, MsgId>>");
    my $id2 = $from->part_publish($GID, [map { $_->uid } @to],
        "$name (part)");
    $m = $from->next;
    is(hex_of($m && $m->{raw}),
        hexdump(invalid_packet(GROUP_PART_PUBLISH, $id2)),
        "$name: GROUP_PART_PUBLISH refused <<10, 11, MsgId>>");
    ok(!grep({ !$_->nothing_for(0.3) } @to), "$name: pushed to nobody");
}

sub chat {
    my ($from, $to, $name) = @_;
    my $id = $from->publish($to->uid, $name);
    my $ack = $from->expect(cmd => PUB_ACK, msgid => $id);
    my $m = $to->expect(cmd => PUBLISH, msgid => $id);
    ok($ack && $m, $name);
}

# keys matching $pattern in every database of $redis
sub keys_in {
    my ($redis, $pattern) = @_;
    return map { @{ $redis->select_cmd($_, 'KEYS', $pattern) } } 0 .. 15;
}

sub sscans {
    my ($redis) = @_;
    my ($n) = $redis->cmd('INFO', 'commandstats')
        =~ /^cmdstat_sscan:calls=(\d+)/m;
    return $n // 0;
}

start($data, "im_group_redis $gaddr;\nim_group_db $GDB;");

sadd($GID, 12801 .. 12804);
my ($u1, $u2, $u3) = map { user($_) } 12801 .. 12803;   # 12804 offline

group_works('plain: group message', $u1, $u2, $u3);

{
    my $id = $u1->part_publish($GID, [12802, 12804, 9999], 'part');
    ok($u1->expect(cmd => GROUP_PART_PUB_ACK, msgid => $id),
        'plain: part-group message acked');
    ok($u2->expect(cmd => GROUP_PART_PUBLISH, msgid => $id),
        'plain: ... the listed member has it');
    ok($u3->nothing_for(0.5), 'plain: ... a member not listed has nothing');
}

chat($u1, $u2, 'plain: 1:1 message');

is($data->cmd('LLEN', 'im:inbox:12804'), 2,
    'the offline member\'s inbox (group and part-group) is on the data Redis');
is(join(' ', keys_in($data, 'im_group:*')), '',
    'the data Redis holds no im_group key, in any database');
is(join(' ', keys_in($grp, 'im:*')), '',
    'the group Redis holds no im: key (no inbox), in any database');
is(sscans($data), 0, 'the data Redis ran no SSCAN');
ok(sscans($grp) >= 2, 'the group Redis ran the SSCANs');
like($grp->cmd('CLIENT', 'LIST'), qr/^[^\n]* db=$GDB [^\n]*cmd=sscan/m,
    "... on database $GDB (im_group_db)");

###############################################################################
# the group Redis stopped, then started again

{
    my $mark = $t->log_mark;
    my $refused = metric('im_refused_total{reason="store"}');
    $grp->stop;

    groups_refused('group Redis stopped', $u1, $u2, $u3);
    is(metric('im_refused_total{reason="store"}'), ($refused // -2) + 2,
        'group Redis stopped: the two counted as refusals of reason store');
    chat($u1, $u2, 'group Redis stopped: 1:1 works');
    my $u5 = user(12805);
    chat($u5, $u1, 'group Redis stopped: a new login, and its message');
    $u5->close(1000);

    ok($t->wait_for_log(qr/connect\(\)[^\n]* failed \(111: Connection refused\)[^\n]*, redis: \Q$gaddr\E \(group\)/,
        from => $mark, timeout => 20),
        'the log names the group Redis\'s address and the cause')
        or diag($t->error_log($mark));

    $mark = $t->log_mark;
    $grp->start;
    ok($t->wait_for_log(qr/connection 1 ready, redis: \Q$gaddr\E \(group\)/,
        from => $mark, timeout => 30), 'group Redis started: connected again');
    is($grp->select_cmd($GDB, 'SCARD', "im_group:$GID"), 4,
        '... with its sets (AOF)');
    group_works('group Redis back: group message', $u1, $u2, $u3);
}

$_->close(1000) for $u1, $u2, $u3;
$_->wait_closed(2) for $u1, $u2, $u3;
$t->stop();

###############################################################################
# the group Redis over TLS with an ACL user

SKIP: {
    make_ca($t, 'ca', who => [qw/redis node/]);

    my $tls = free_port();
    my $sec = eval {
        IM::Redis->new(t => $t, args => [
            '--tls-port', $tls,
            '--tls-cert-file', "$d/redis.crt",
            '--tls-key-file', "$d/redis.key",
            '--tls-ca-cert-file', "$d/ca.crt",
            '--tls-auth-clients', 'yes',
        ]);
    };
    skip("redis-server without TLS: $@", 12) unless $sec;

    # the sets only: read them, on their database
    $sec->cmd('ACL', 'SETUSER', 'imgroup', 'on', '>group-secret',
        '~im_group:*', '+sscan', '+select', '+ping');
    $sec->select_cmd($GDB, 'SADD', "im_group:$GID", 12801 .. 12803);

    my $TLS = "im_redis_ssl_trusted_certificate $d/ca.crt;\n"
        . "im_redis_ssl_certificate $d/node.crt;\n"
        . "im_redis_ssl_certificate_key $d/node.key;\n"
        . "im_group_db $GDB;\n";

    start($data, "im_group_redis 127.0.0.1:$tls ssl user=imgroup"
        . " password=group-secret;\n$TLS");
    my ($s1, $s2, $s3) = map { user($_) } 12801 .. 12803;
    group_works('TLS and ACL: group message', $s1, $s2, $s3);
    like($sec->cmd('CLIENT', 'LIST'),
        qr/^[^\n]* db=$GDB [^\n]*cmd=sscan user=imgroup /m,
        'TLS and ACL: read as the ACL user, on its database');
    $_->close(1000) for $s1, $s2, $s3;
    $_->wait_closed(2) for $s1, $s2, $s3;
    $t->stop();

    my $mark = $t->log_mark;
    start($data, "im_group_redis 127.0.0.1:$tls ssl user=imgroup"
        . " password=wrong;\n$TLS");
    ok($t->wait_for_log(qr/AUTH failed: WRONGPASS[^\n]*, redis: 127\.0\.0\.1:$tls \(group\)/,
        from => $mark, timeout => 20),
        'wrong password: the log says "AUTH failed", naming the address')
        or diag($t->error_log($mark));
    ($s1, $s2) = map { user($_) } 12801, 12802;
    groups_refused('wrong password', $s1, $s2);
    chat($s1, $s2, 'wrong password: 1:1 works');
    $_->close(1000) for $s1, $s2;
    $_->wait_closed(2) for $s1, $s2;
    $t->stop();
    $sec->stop;
}

###############################################################################
# Redis Cluster with im_group_redis

{
    my $rc = IM::RedisCluster->new(t => $t, masters => 3, timeout => 30);
    my $seed = $rc->node(0);

    start($seed, "im_redis_cluster on;\nim_group_redis $gaddr;\n"
        . "im_group_db $GDB;");
    ok($t->wait_for_log(qr/im redis cluster: slot map read/, timeout => 30),
        'cluster: the slot map read');

    my ($c1, $code);
    ok(wait_until(sub {
        $c1 = IM::Client->new(port => port(9095), auto_pong => 1,
            uid => 12801, auto_ack => 1);
        $code = $c1->login('u12801', 'pw');
        return defined $code && $code == 0;
    }, 30), 'cluster: u12801 logs in');
    my ($c2, $c3) = map { user($_) } 12802, 12803;

    my $before = sscans($grp);
    group_works('cluster: group message', $c1, $c2, $c3);
    ok(sscans($grp) > $before, 'cluster: the sets read from the group Redis');
    is($rc->cmd('LLEN', 'im:inbox:{12804}'), 1,
        'cluster: the offline member\'s inbox is in the cluster');
    is(join(' ', map { @{ $_->cmd('KEYS', 'im_group:*') } } $rc->nodes), '',
        'cluster: the cluster holds no im_group key');
    is(join(' ', map { sscans($_) } $rc->nodes), '0 0 0',
        'cluster: no master ran an SSCAN');
    chat($c1, $c2, 'cluster: 1:1 message');

    # the map is read again a second after a read that found a master's
    # connection not ready yet (at the start): once all are ready, at most
    # that one read is still to come
    my @ports = map { $_->port } $rc->nodes;
    ok(wait_until(sub {
        my $log = $t->error_log;
        return !grep { $log !~ /connection 0 ready, redis: 127\.0\.0\.1:$_ \(inbox\)/ }
            @ports;
    }, 30),
        'cluster: the inbox connections to the three masters are up');
    my $reads = map_reads();
    ok(defined $reads && $reads > 0,
        'cluster: /metrics counts the slot map\'s reads (' . ($reads // 'none')
        . ')');
    my $mark = $t->log_mark;
    $grp->stop;
    groups_refused('cluster, group Redis stopped', $c1, $c2, $c3);
    chat($c1, $c2, 'cluster, group Redis stopped: 1:1 works');
    ok($t->wait_for_log(qr/failed \(111: Connection refused\)[^\n]*, redis: \Q$gaddr\E \(group\)/,
        from => $mark, timeout => 20),
        'cluster: the log names the group Redis and the cause');

    $mark = $t->log_mark;
    $grp->start;
    ok($t->wait_for_log(qr/connection 1 ready, redis: \Q$gaddr\E \(group\)/,
        from => $mark, timeout => 30),
        'cluster: group Redis started: connected again');
    group_works('cluster, group Redis back: group message', $c1, $c2, $c3);
    # without the guard, the connection lost and each failed attempt read
    # the map: two reads at least
    my $more = (map_reads() // 0) - $reads;
    ok($more <= 1, "cluster: the group Redis's outage read no slot map"
        . " ($more more reads, the start's pending one at most)");

    $_->close(1000) for $c1, $c2, $c3;
    $_->wait_closed(2) for $c1, $c2, $c3;
    $t->stop();
    $rc->stop;
}

# a counter of /metrics, undef when it is not there
sub metric {
    my ($line) = @_;
    my $r = http_get('/metrics', port => port(9095)) // '';
    my ($n) = $r =~ /^\Q$line\E (\d+)$/m;
    return $n;
}

sub map_reads { metric('im_redis_cluster_map_reads_total') }

$t->done_testing();
