#!/usr/bin/perl
# Limits per uid (docs/decisions/023-per-uid-limits.md, docs/GUIDE.md 5):
#
#   - im_msg_rate: one token bucket per uid shared by the two workers of a
#     node (im_zone): two sessions of one uid on different workers draw on
#     the same burst; beyond it <<10, Cmd, MsgId>>, counted; another uid and
#     the TCP API are not limited;
#   - im_max_recipients: a client's part-group list over the cap is refused
#     (<<10, 11, MsgId>>), at the cap it goes; the TCP API is exempt;
#   - failed logins limited per user name in the auth location (limit_req
#     keyed by $im_username, limit_req_status 429), with a limit_req on the
#     WebSocket location too: the flooded name gets CONNECT_ACK 2 without
#     the user centre being asked, another name logs in;
#   - im_max_sessions across two nodes: under "kick" the oldest session of
#     the uid gets LOGOUT, under "reject" the new login gets <<2,1>> and
#     what it took is given back.
#
# Rates are 1 r/m: what the assertions count cannot change unless a minute
# passes between the first and the last message of a check.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::TCP;
use IM::Proto qw/:all/;
use IM::Cluster qw/login status/;

my $t = Test::Nginx->new()->has(qw/http stream redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t,
    users => "victim right 3001\nbob bob-pw 3002\n* * uid-from-name\n");

###############################################################################
# one node, two workers: message rate, recipients, logins per user name

$t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
daemon on;
worker_processes 2;
im_redis ${\ $redis->addr };
im_zone im 1m;
im_msg_rate 1r/m burst=5;
im_max_recipients 3;
# quiet timers: clients are not read for a while, nothing here is about
# pings or re-pushes
im_ping_interval 300s;
im_repush_interval 60s;
im_close_grace 1s;
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    limit_req_zone \$binary_remote_addr zone=per_ip:1m rate=1000r/s;
    # per user name, as conf/nginx.conf; the other checks' u<uid> users
    # log in many times and are left out (an empty key is not counted)
    map \$im_username \$login_key { ~^u\\d+\$ ""; default \$im_username; }
    limit_req_zone \$login_key zone=per_user:1m rate=1r/m;
    # docs/GUIDE.md 6: which variable has a value where
    log_format ws '\$im_username \$im_uid \$im_client_id \$status';
    log_format auth '\$im_username \$im_uid \$im_client_id \$im_role';
    server {
        listen 127.0.0.1:%%PORT_9095%% reuseport;
        location /ws {
            im_websocket;
            im_auth /_auth;
            # a handshake limit too: the auth location's must still count
            limit_req zone=per_ip burst=1000 nodelay;
            set \$pre "\$im_username|\$im_uid|\$im_worker";
            add_header X-Pre \$pre always;
            access_log ${\ $t->testdir }/ws.log ws;
        }
        location = /status { im_status; }
        ${\ $uc->auth_location(body => 'username=$im_username&password='
            . '$im_password&uid=$im_uid&cid=$im_client_id&role=$im_role',
            extra => 'limit_req zone=per_user burst=2 nodelay;
            limit_req_status 429;
            log_subrequest on;
            access_log ' . $t->testdir . '/auth.log auth;') }
    }
}
stream {
    %%TEST_GLOBALS_STREAM%%
    server {
        listen 127.0.0.1:%%PORT_19095%%;
        im_tcp;
    }
}
EOF
$t->run();
$t->{im_port} = port(9095);

# a counter of the node's /status (every worker answers for the node):
# $map is the JSON object that holds it ("refused_by_reason", ...)
sub node_count {
    my ($port, $map, $key) = @_;
    my $st = status($port);
    return ref $st->{$map} eq 'HASH' ? $st->{$map}{$key} : undef;
}

# a refusal, byte for byte
sub refusal { pack('CC', INVALID_PACKET, $_[0]) . $_[1] }

# the answer to a message: 'ack', 'refused' or undef (none in time)
sub answer {
    my ($c, $id) = @_;
    while (my $m = $c->next) {
        next unless defined $m->{msgid} && $m->{msgid} eq $id;
        return 'ack' if $m->{cmd} == PUB_ACK || $m->{cmd} == GROUP_PART_PUB_ACK;
        return $m->{raw} if $m->{cmd} == INVALID_PACKET;
    }
    return undef;
}

# --- im_msg_rate: one bucket per uid for the whole node

{
    # two sessions of uid 4001 on different workers: ClientIds until one
    # lands on the other worker (reuseport spreads connections at random)
    my ($x, undef, $wx) = login($t, 4001, client_id => 1);
    ok($x && $wx, 'rate: first session of uid 4001');
    my ($y, $wy);
    for my $cid (2 .. 40) {
        my ($c, $code, $w) = login($t, 4001, client_id => $cid);
        next unless defined $code && $code == 0;
        if ($w && $w ne $wx) { ($y, $wy) = ($c, $w); last }
    }
    ok($y, 'rate: a second session of uid 4001 on the other worker')
        or diag("worker $wx took every one");

    SKIP: {
        skip 'no session on the other worker', 6 unless $y;

        # burst 5: six at once (the first and five over the rate), then
        # refusals; three from each worker, the bucket is one
        my @ax = map { answer($x, $x->publish(4100, "x$_")) } 1 .. 3;
        is("@ax", 'ack ack ack', 'rate: worker 1: three messages acked');

        my (@ids, @ay);
        for my $i (1 .. 6) {
            my $id = $y->publish(4100, "y$i");
            push @ids, $id;
            push @ay, answer($y, $id);
        }
        is("@ay[0 .. 2]", 'ack ack ack',
            'rate: worker 2: the next three acked (six in all)');
        is_deeply([@ay[3 .. 5]], [map { refusal(PUBLISH, $_) } @ids[3 .. 5]],
            'rate: ... then <<10, 3, MsgId>> for each message over the burst');

        # refused messages were not delivered
        my ($r) = login($t, 4100);
        my @got;
        while (my $m = $r->expect(cmd => PUBLISH, timeout => 3)) {
            push @got, $m->{text};
            last if @got == 6;
        }
        is(join(' ', sort @got), 'x1 x2 x3 y1 y2 y3',
            'rate: the recipient got the six accepted messages only');
        ok($r->nothing_for(0.5), 'rate: ... and nothing else');

        # the session is still fine: still refused, not closed
        my $later = $x->publish(4100, 'later');
        is(answer($x, $later), refusal(PUBLISH, $later),
            'rate: still over the rate a moment later');
    }

    # another uid has its own bucket
    my ($o) = login($t, 4002);
    is(answer($o, $o->publish(4100, 'other')), 'ack',
        'rate: another uid is not limited');

    # the TCP API is exempt
    my $tcp = IM::TCP->new(port => port(19095));
    my @t = map {
        my $id = msgid();
        my $m = $tcp->request(publish_msg(4100, $id, "tcp$_"));
        $m && $m->{cmd} == PUB_ACK ? 'ack' : 'no';
    } 1 .. 8;
    is("@t", join(' ', ('ack') x 8), 'rate: the TCP API sends unlimited');

    # counted: the log says which worker refused, /status of each counts
    is(() = $t->error_log =~ /message refused, over im_msg_rate/g, 4,
        'rate: four refusals logged');
    is(node_count(port(9095), 'refused_by_reason', 'rate'), 4,
        'rate: /status counts 4 refusals for the rate, both workers\' own');
}

# --- im_max_recipients

{
    $redis->select_cmd(1, SADD => 'im_group:77', 4010, 4011, 4012, 4013,
        4014, 4015);
    my ($s) = login($t, 4010);

    my $id = $s->part_publish(77, [4011, 4012, 4013, 4014], 'four');
    is(answer($s, $id), refusal(GROUP_PART_PUBLISH, $id),
        'recipients: four uids over a cap of 3 -> <<10, 11, MsgId>>');
    is(answer($s, $s->part_publish(77, [4011, 4012, 4013], 'three')), 'ack',
        'recipients: three uids go');

    my $tcp = IM::TCP->new(port => port(19095));
    my $m = $tcp->request(part_publish_msg(77, msgid(),
        [4010, 4011, 4012, 4013, 4014, 4015], 'system'));
    is($m && $m->{cmd}, GROUP_PART_PUB_ACK,
        'recipients: the TCP API is exempt (six uids)');
    ok($t->error_log =~ /part-group message to 4 uids refused/,
        'recipients: the refusal is logged');
    is(node_count(port(9095), 'refused_by_reason', 'fanout'), 1,
        'recipients: /status counts it as "fanout"');
}

# --- failed logins per user name, through the auth location

{
    my $before = grep { ($_->{params}{username} // '') eq 'victim' }
        $uc->requests;

    # 1 r/m, burst 2: three wrong passwords reach the user centre, then
    # the name is limited: code 2 ("try later"), not 3
    my @codes;
    for my $i (1 .. 6) {
        my $c = IM::Client->new(port => port(9095));
        push @codes, $c->login('victim', "guess$i") // 'none';
        $c->close(1000);
    }
    is("@codes", '3 3 3 2 2 2',
        'login limit: three denied, then CONNECT_ACK 2 for the flooded name');

    my $asked = grep { ($_->{params}{username} // '') eq 'victim' }
        $uc->requests;
    is($asked - $before, 3, 'login limit: the user centre was asked 3 times');

    my $b = IM::Client->new(port => port(9095));
    is($b->login('bob', 'bob-pw'), 0, 'login limit: another name logs in');

    my $v = IM::Client->new(port => port(9095));
    is($v->login('victim', 'right'), 2,
        'login limit: the flooded name is limited, right password or not');

    ok($t->error_log =~ /login limited by the auth location \(429\)/,
        'login limit: logged as limited, not as a broken user centre');
}

# --- the $im_* variables, phase by phase (docs/GUIDE.md 6)

{
    my $c = IM::Client->new(port => port(9095));
    is($c->login('u4200', 'pw', role => 2, client_id => 7), 0,
        'variables: u4200 logs in with role 2, ClientId 7');
    like($c->ws->header('x-pre') // '', qr/^\|\|\d+$/,
        'variables: handshake: only $im_worker');
    # the access line is written at the session's end (GUIDE 8)
    $c->disconnect;
    $c->wait_closed(5);
    my $d = $t->testdir;
    my ($ws, $auth) = ('', '');
    wait_until(sub {
        $ws = $t->read_file('ws.log') // '' if -f "$d/ws.log";
        return $ws =~ / 4200 7 /;
    }, 5);
    my ($req) = grep { ($_->{params}{username} // '') eq 'u4200' }
        $uc->requests;
    is(join(' ', map { $req->{params}{$_} // '-' } qw/password uid cid role/),
        'pw 0 7 2',
        'variables: auth request: password, no uid yet, ClientId, role');
    $auth = $t->read_file('auth.log') // '' if -f "$d/auth.log";
    like($auth, qr/^u4200 4200 7 2$/m,
        'variables: the auth location\'s own log line, after the answer: '
        . 'the uid');
    like($ws, qr/^- 4200 7 101$/m,
        'variables: access log: uid, ClientId; the name was let go at login');
}

$t->stop;

###############################################################################
# im_max_sessions 2 across two nodes

my %TIMERS = (
    im_ping_interval   => '300s',
    im_repush_interval => '60s',
    im_close_grace     => '1s',
    im_max_sessions    => 2,
);

for my $policy (qw/kick reject/) {
    my $off = $policy eq 'kick' ? 0 : 1;
    my $a = IM::Cluster::node(name => "a$off", port => 9100 + 10 * $off,
        redis => $redis, uc => $uc, timers => \%TIMERS, policy => $policy,
        status => 1);
    my $b = IM::Cluster::node(name => "b$off", port => 9101 + 10 * $off,
        redis => $redis, uc => $uc, timers => \%TIMERS, policy => $policy,
        status => 1);
    $a->run;
    $b->run;

    my $uid = 5001 + $off;
    my $key = "im:s:$uid";

    my ($c1, $k1) = login($a, $uid, client_id => 1);
    my ($c2, $k2) = login($b, $uid, client_id => 2);
    is("$k1 $k2", '0 0', "$policy: two sessions of uid $uid, one per node");
    is($redis->cmd(HLEN => $key), 2, "$policy: two entries in $key");

    my $c3 = IM::Client->new(port => $a->{im_port}, auto_pong => 1);
    my $k3 = $c3->login("u$uid", 'pw', client_id => 3);

    if ($policy eq 'kick') {
        is($k3, 0, 'kick: a third login is accepted');
        ok($c1->expect(cmd => LOGOUT), 'kick: the oldest session gets LOGOUT');
        ok($c2->nothing_for(0.5), 'kick: the other one stays');

        # a fourth on node b: the oldest is now ClientId 2, on b
        my ($c4, $k4) = login($b, $uid, client_id => 4);
        is($k4, 0, 'kick: a fourth login is accepted');
        ok($c2->expect(cmd => LOGOUT), 'kick: the oldest (ClientId 2) goes');

        # the same ClientId again replaces its own session, no other
        my ($c4b, $k4b) = login($a, $uid, client_id => 4);
        is($k4b, 0, 'kick: ClientId 4 again, on the other node');
        ok($c4->expect(cmd => LOGOUT), 'kick: its older session goes');
        ok($c3->nothing_for(0.5), 'kick: ClientId 3 stays');

        my ($s) = login($a, 5100);
        my $id = $s->publish($uid, 'still here');
        ok($c3->expect(cmd => PUBLISH, msgid => $id),
            'kick: ClientId 3 still receives');
        ok(wait_until(sub { $redis->cmd(HLEN => $key) == 2 }, 5),
            "kick: $key holds the two live sessions");
        is(node_count($a->{im_port}, 'max_sessions', 'kicked') . ' '
            . node_count($b->{im_port}, 'max_sessions', 'kicked'), '1 1',
            'kick: /status max_sessions.kicked: one on node a, one on b');
        is(() = $a->error_log =~ /client 1 logged out, im_max_sessions 2/g, 1,
            'kick: logged where the login was');

    } else {
        is($k3, 1, 'reject: a third login gets CONNECT_ACK 1');
        ok($c3->wait_closed(5), 'reject: ... then the grace close');
        ok($c1->nothing_for(0.3) && $c2->nothing_for(0.3),
            'reject: the two sessions stay');
        is($redis->cmd(HLEN => $key), 2, "reject: $key still holds two");
        ok(!$redis->cmd(EXISTS => "im:p:$uid:3"),
            'reject: the refused login gave its presence key back');

        # room again once one leaves
        $c1->close(1000);
        ok(wait_until(sub { $redis->cmd(HLEN => $key) == 1 }, 5),
            'reject: a session that leaves leaves the count');
        my ($c3b, $k3b) = login($a, $uid, client_id => 3);
        is($k3b, 0, 'reject: then ClientId 3 logs in');
        is(node_count($a->{im_port}, 'max_sessions', 'refused'), 1,
            'reject: /status max_sessions.refused of node a is 1');
        ok($a->error_log =~ /client 3: login refused, im_max_sessions 2/,
            'reject: the refusal is logged');
    }

    $a->stop;
    $b->stop;
}

$t->done_testing();
