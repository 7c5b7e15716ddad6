#!/usr/bin/perl
# The admin API's publish with a wait (docs/API.md, decision 032): two
# nodes sharing one Redis, two workers each.
#
#   - a part-group message to a uid on each worker of node a and one on
#     node b (whichever worker takes the request, one ack comes from that
#     worker, one from its sibling, one from the other node), an offline
#     member and a stranger: acked with ClientId, node, worker and
#     after_ms; stored; refused; the answer comes when the last live
#     recipient acked, long before the wait is over;
#   - a recipient that never acks: "pushed" when a 1 s wait ends;
#   - an offline recipient: "stored";
#   - wait 0 (and no wait): the answer without acks, as before;
#   - after the subscriber connections are cut, the workers' "im:w:"
#     channels are subscribed again and an ack from the other node comes;
#   - a bad wait: 400; a client that leaves while its publish waits.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port http wait_until/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Cluster qw/login/;
use JSON::PP ();
use Time::HiRes qw/time/;

my %TIMERS = (
    im_ping_interval   => '300s',
    im_ping_timeout    => '5s',
    im_repush_interval => '60s',
    im_close_grace     => '1s',
);

sub node {
    my (%o) = @_;
    return IM::Cluster::node(%o, timers => \%TIMERS,
        locations => 'location /api/ { im_api; }');
}

my $json = JSON::PP->new->canonical;

# a publish sent now, its answer read later (the recipients must read
# and ack in between): the socket
sub publish_start {
    my ($port, $body) = @_;
    $body = $json->encode($body);
    return Test::Nginx::http_start("POST /api/publish HTTP/1.0\r\n"
        . "Host: localhost\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n",
        port => port($port), body => $body);
}

# (status, decoded body) of a started publish; $timeout bounds the read
sub publish_end {
    my ($s, $timeout) = @_;
    my $r = $s ? Test::Nginx::http_end($s, timeout => $timeout) // '' : '';
    my ($status) = $r =~ m{^HTTP/1\.\d (\d+)};
    my ($text) = $r =~ /\r\n\r\n(.*)\z/s;
    return ($status // 0, eval { $json->decode($text // '') });
}

sub publish {
    my ($port, $body, $timeout) = @_;
    return publish_end(publish_start($port, $body), $timeout);
}

sub by_uid { return { map { $_->{uid} => $_ } @{$_[0]{delivery} || []} } }

###############################################################################

my $t0 = Test::Nginx->new()->has(qw/http redis/);
my $redis = IM::Redis->new(t => $t0);
my $uc = IM::UserCentre->new(t => $t0, users => "* * uid-from-name\n");

my $na = node(name => 'a', port => 9095, redis => $redis, uc => $uc);
my $nb = node(name => 'b', port => 9096, redis => $redis, uc => $uc);
$na->run();
$nb->run();

# a session on each worker of node a: logins of new uids until both
# workers hold one (reuseport spreads them; bounded)
my (%on, @extra);
for my $uid (1300 .. 1339) {
    my ($c, $code, $pid) = login($na, $uid, client_id => 7);
    next unless defined $code && $code == 0 && $pid;
    if (!$on{$pid}) {
        $on{$pid} = [$uid, $c];
    } else {
        push @extra, $c;
    }
    last if keys %on == 2;
}
$_->close for @extra;
is(scalar keys %on, 2, 'a session on each of node a\'s two workers');
my ($pa1, $pa2) = sort keys %on;
my ($x, $cx) = @{$on{$pa1} || [0]};
my ($y, $cy) = @{$on{$pa2} || [0]};

my ($cz, $codez, $pz) = login($nb, 1401, client_id => 9);
is($codez, 0, 'u1401 on node b');
my ($cn, $coden) = login($na, 1402, auto_ack => 0);
is($coden, 0, 'u1402 on node a, never acks');

# the registration is not waited for by the login: wait for it here
ok(wait_until(sub {
    my $r = http("GET /api/presence?uid=$x,$y,1401,1402 HTTP/1.0\r\n"
        . "Host: localhost\r\n\r\n", port => port(9095)) // '';
    my ($body) = $r =~ /\r\n\r\n(.*)\z/s;
    my $p = eval { $json->decode($body // '') } or return 0;
    return 4 == grep { $_->{online} } @{$p->{users}};
}, 10), 'all four registered');

$redis->select_cmd(1, 'SADD', 'im_group:78', $x, $y, 1401, 1403);

###############################################################################
# acked on this worker, its sibling and the other node; stored; refused

{
    my $id = 'wait0001' x 4;
    my $t = time;
    my $s = publish_start(9095, { gid => 78, uids => [$x, $y, 1401, 1403,
        4242], msgid => $id, payload => 'wait for it', wait => 30 });
    ok($s, 'a part-group publish with a wait of 30 s is sent');

    # each live recipient reads it and acks (auto_ack)
    for ([$cx, $x], [$cy, $y], [$cz, 1401]) {
        my ($c, $uid) = @$_;
        ok($c && $c->expect(msgid => $id), "u$uid gets it and acks");
    }

    # the answer comes once the three acked: well before the wait ends
    my ($st, $p) = publish_end($s, 20);
    my $elapsed = (time - $t) * 1000;
    is($st, 200, 'the answer, before the wait is over');
    my $d = by_uid($p);
    is($p->{acked}, 3, 'three recipients acked');

    for ([$x, 7, 'a', $pa1], [$y, 7, 'a', $pa2], [1401, 9, 'b', $pz]) {
        my ($uid, $cid, $node, $pid) = @$_;
        my $r = $d->{$uid} || {};
        is($r->{outcome}, 'acked', "u$uid: acked");
        is(scalar @{$r->{acks} || []}, 1, "u$uid: one ack");
        my $a = $r->{acks}[0] || {};
        is($a->{client_id}, $cid, "u$uid: by ClientId $cid");
        is($a->{node}, $node, "u$uid: on node $node");
        is($a->{worker}, $pid, "u$uid: by the worker that holds it");
        ok(defined $a->{after_ms} && $a->{after_ms} >= 0
            && $a->{after_ms} <= $elapsed + 1000,
            "u$uid: after_ms ($a->{after_ms}) within the request's time");
    }

    is($d->{1403}{outcome}, 'stored', 'offline member: stored');
    is_deeply($d->{1403}{acks}, [], 'offline member: no acks');
    is($d->{4242}{outcome}, 'refused', 'a stranger: refused');
    like($d->{4242}{reason} // '', qr/not a member/, 'a stranger: why');
    is(scalar @{$p->{delivery} || []}, 5, 'five recipients listed');
}

###############################################################################
# pushed and never acked: "pushed" when a short wait is over

{
    my $id = 'wait0002' x 4;
    my $s = publish_start(9096, { to => 1402, msgid => $id,
        payload => 'no ack', wait => 1 });
    my $m = $cn->expect(msgid => $id);
    ok($m, 'u1402 gets it (and does not ack)');
    my ($st, $p) = publish_end($s, 20);
    is($st, 200, 'no ack: the answer when the wait is over');
    is($p->{acked}, 0, 'no ack: none acked');
    is_deeply($p->{delivery}, [{ uid => 1402, outcome => 'pushed',
        sessions => 1, acks => [] }], 'no ack: pushed, no acks');
    $cn->ack($id);
}

###############################################################################
# offline: stored (the answer does not wait: nobody could ack)

{
    my ($st, $p) = publish(9095, { to => 1404, payload => 'later',
        wait => 30 }, 20);
    is($st, 200, 'offline: 200');
    is_deeply($p->{delivery}, [{ uid => 1404, outcome => 'stored',
        sessions => 0, acks => [] }], 'offline: stored');
}

###############################################################################
# 1:1 across nodes: asked on b, acked on a

{
    my $id = 'wait0003' x 4;
    my $s = publish_start(9096, { to => $x, from => 1401, msgid => $id,
        payload => '1:1', wait => 30 });
    ok($cx->expect(msgid => $id), "u$x gets the 1:1 message");
    my ($st, $p) = publish_end($s, 20);
    is($st, 200, '1:1 across nodes: 200');
    my $r = by_uid($p)->{$x} || {};
    is($r->{outcome}, 'acked', '1:1 across nodes: acked');
    is($r->{acks}[0]{node}, 'a', '1:1 across nodes: on node a');
    is($r->{acks}[0]{client_id}, 7, '1:1 across nodes: ClientId 7');
}

###############################################################################
# wait 0 and no wait: as before, no acks

for my $w (0, undef) {
    my $name = defined $w ? 'wait 0' : 'no wait';
    my %b = (to => 1401, payload => $name);
    $b{wait} = $w if defined $w;
    my ($st, $p) = publish(9095, \%b);
    is($st, 200, "$name: 200");
    is_deeply($p->{delivery}, [{ uid => 1401, outcome => 'pushed',
        sessions => 1 }], "$name: pushed, without acks");
    ok(!exists $p->{acked}, "$name: no acked count");
    ok($cz->expect(msgid => $p->{msgid}), "$name: u1401 gets it");
}

###############################################################################
# bad waits

for my $w (31, -1, '5', JSON::PP::true) {
    my $name = 'wait ' . $json->encode([$w]);
    my ($st, $p) = publish(9095, { to => 1401, payload => 'x', wait => $w });
    is($st, 400, "$name: 400");
    like($p && $p->{reason} // '', qr/"wait" must be a number of seconds/,
        "$name: the reason");
}

###############################################################################
# the subscriber connections cut: each worker subscribes its own "im:w:"
# channel again, and an ack from the other node still comes back

{
    my $wchannels = sub {
        my $r = $redis->cmd('PUBSUB', 'CHANNELS', 'im:w:*');
        return ref $r eq 'ARRAY' ? scalar @$r : -1;
    };
    is($wchannels->(), 4, 'each of the four workers has its im:w: channel');
    $redis->cmd('CLIENT', 'KILL', 'TYPE', 'pubsub');
    ok(wait_until(sub {
        my $r = $redis->cmd('PUBSUB', 'NUMSUB', "im:u:$x", 'im:u:1401');
        $wchannels->() == 4 && ref $r eq 'ARRAY' && $r->[1] && $r->[3];
    }, 30), 'after the cut: the im:w: channels and the uids\' are back');

    my $id = 'wait0004' x 4;
    my $s = publish_start(9095, { to => 1401, msgid => $id,
        payload => 'after the cut', wait => 30 });
    ok($cz->expect(msgid => $id), 'u1401 on b gets it after the cut');
    my ($st, $p) = publish_end($s, 20);
    is($st, 200, 'after the cut: 200');
    my $r = by_uid($p)->{1401} || {};
    is($r->{outcome}, 'acked', 'after the cut: acked on the other node');
    is($r->{acks}[0]{node}, 'b', 'after the cut: by node b');
}

###############################################################################
# clients that leave while their publish waits: the workers go on

{
    for (1 .. 10) {
        my $s = publish_start(9095, { to => 1402, payload => 'left',
            wait => 1 });
        $s->close if $s;
    }
    $cn->drain(0.2);
    # each request ends when its wait is over; then the API still answers
    my ($st, $p) = publish(9095, { to => 1404, payload => 'still here',
        wait => 1 }, 20);
    is($st, 200, 'after clients that left: the API still answers');
    is($p->{delivery}[0]{outcome}, 'stored', 'and right');
}

$_->close for grep { $_ } $cx, $cy, $cz, $cn;

done_testing();
