#!/usr/bin/perl
# The admin HTTP API (im_api; docs/API.md): two nodes sharing one Redis,
# two workers each, the API on both.
#
#   - presence of several uids: their sessions with node, worker, ClientId,
#     Role and since when, counts per node; read on the other node;
#   - publish as the system and as a given sender (its receipt comes back
#     to that sender), 1:1, group and part-group, across nodes, with the
#     outcome per recipient (pushed or stored); refused: not a member;
#   - the inbox of an offline uid (MsgId, sender, size, stored at) and the
#     recall of one message by MsgId (by uid and by gid): only the other
#     one is delivered at the next login;
#   - kick of one ClientId and of a whole uid, on the other node: LOGOUT,
#     then the close; the other ClientId stays;
#   - bad input: malformed JSON, unknown fields, wrong types, missing
#     arguments, unknown endpoint, wrong method, a "wait" over 30 s
#     (the wait itself: t/246-api-wait.t);
#   - nginx's access control: deny, and auth_request with and without the
#     token.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port http wait_until/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Cluster qw/login status/;
use JSON::PP ();

my %TIMERS = (
    im_ping_interval   => '300s',
    im_ping_timeout    => '5s',
    im_repush_interval => '60s',
    im_close_grace     => '1s',
);

# /api/ open to the tests (they connect from 127.0.0.1), /denied/ closed,
# /guarded/ behind an auth_request that wants a token
my $LOCATIONS = <<'EOF';
location /api/ { allow 127.0.0.1; deny all; im_api; }
location /denied/ { deny 127.0.0.1; im_api; }
location /guarded/ { auth_request /_api_auth; im_api; }
location = /_api_auth {
    internal;
    if ($http_x_api_token = "s3cret") { return 204; }
    return 401;
}
EOF

sub node {
    my (%o) = @_;
    return IM::Cluster::node(%o, timers => \%TIMERS, locations => $LOCATIONS,
        ws => 'im_receipts on;', status => 1);
}

my $json = JSON::PP->new->canonical;

# one API call: (status, decoded body or undef, raw response)
sub api {
    my ($port, $method, $path, $body, %h) = @_;
    my $hdr = join '', map { "$_: $h{$_}\r\n" } sort keys %h;
    my $req = "$method $path HTTP/1.0\r\nHost: localhost\r\n$hdr";
    if (defined $body) {
        $body = $json->encode($body) if ref $body;
        $req .= "Content-Type: application/json\r\n"
            . "Content-Length: " . length($body) . "\r\n";
    }
    my $r = http("$req\r\n", port => port($port), body => $body) // '';
    my ($status) = $r =~ m{^HTTP/1\.\d (\d+)};
    my ($text) = $r =~ /\r\n\r\n(.*)\z/s;
    my $j = eval { $json->decode($text // '') };
    return ($status // 0, $j, $r);
}

###############################################################################

my $t0 = Test::Nginx->new()->has(qw/http redis auth_request/);
my $redis = IM::Redis->new(t => $t0);
my $uc = IM::UserCentre->new(t => $t0, users => "* * uid-from-name\n");

my $na = node(name => 'a', port => 9095, redis => $redis, uc => $uc);
my $nb = node(name => 'b', port => 9096, redis => $redis, uc => $uc);
$na->run();
$nb->run();

# u1101 on both nodes (ClientIds 1 and 2), u1102 on a; u1103 offline
my ($c1, $code1, $pid1) = login($na, 1101, client_id => 1);
is($code1, 0, 'u1101 client 1 on a');
my ($c2, $code2, $pid2) = login($nb, 1101, client_id => 2);
is($code2, 0, 'u1101 client 2 on b');
my ($c3, $code3, $pid3) = login($na, 1102, auto_ack => 0);
is($code3, 0, 'u1102 on a');

###############################################################################
# presence, asked on b

{
    # the registration is not waited for by the login: wait for it here
    my ($s, $p);
    wait_until(sub {
        ($s, $p) = api(9096, 'GET', '/api/presence?uid=1103,1102,1101');
        my @n = map { scalar @{$_->{sessions}} } @{$p->{users} || []};
        return "@n" eq '2 1 0';
    }, 10);
    is($s, 200, 'presence: 200');
    my %u = map { $_->{uid} => $_ } @{$p->{users}};
    is_deeply([map { $_->{uid} } @{$p->{users}}], [1101, 1102, 1103],
        'presence: the uids in order, each once');
    ok($u{1101}{online} && $u{1102}{online} && !$u{1103}{online},
        'presence: online flags');
    my %by = map { $_->{client_id} => $_ } @{$u{1101}{sessions}};
    is($by{1}{node}, 'a', 'u1101 client 1 is on node a');
    is($by{2}{node}, 'b', 'u1101 client 2 is on node b');
    is($by{1}{worker}, $pid1, 'the worker of client 1 is the one that '
        . 'logged it in');
    is($by{2}{worker}, $pid2, 'the worker of client 2 too');
    ok(defined $by{1}{role} && $by{1}{since_ms} > 1e12
        && $by{1}{since_ms} <= time * 1000 + 1000,
        'role and since_ms are given');
    is_deeply($p->{nodes}, { a => { sessions => 2, uids => 2 },
        b => { sessions => 1, uids => 1 } }, 'presence: counts per node');
}

###############################################################################
# publish

{
    # as the system, to u1102 on a, asked on b
    my ($s, $p) = api(9096, 'POST', '/api/publish',
        { to => 1102, payload => 'from the system' });
    is($s, 200, 'publish as the system: 200');
    is($p->{outcome}, 'accepted', 'publish: accepted');
    is($p->{from}, 0, 'publish: from the system');
    is_deeply($p->{delivery}, [{ uid => 1102, outcome => 'pushed',
        sessions => 1 }], 'publish: u1102 pushed');
    my $m = $c3->expect(cmd => PUBLISH, msgid => $p->{msgid});
    is($m && $m->{payload}, 'from the system', 'u1102 gets it');
    $c3->ack($m->{msgid}) if $m;

    # as u1101, with a MsgId of ours: u1102's ack makes a receipt for
    # u1101's sessions on both nodes
    my $id = IM::Proto::msgid();
    ($s, $p) = api(9095, 'POST', '/api/publish',
        { from => 1101, to => 1102, msgid => $id, payload => 'as 1101' });
    is($s, 200, 'publish as u1101: 200');
    is($p->{msgid}, $id, 'publish: our MsgId');
    $m = $c3->expect(cmd => PUBLISH, msgid => $id);
    ok($m, 'u1102 gets the message of u1101');
    $c3->ack($id);
    my $r1 = $c1->expect(cmd => RECEIPT, msgid => $id);
    my $r2 = $c2->expect(cmd => RECEIPT, msgid => $id);
    ok($r1 && $r2 && $r1->{uid} == 1102,
        'the sender u1101 gets the receipt on both nodes');

    # to an offline uid: stored
    ($s, $p) = api(9096, 'POST', '/api/publish',
        { to => 1103, payload => 'keep 1' });
    is_deeply([$s, $p->{delivery}],
        [200, [{ uid => 1103, outcome => 'stored', sessions => 0 }]],
        'publish to offline u1103: stored');

    # a group: u1101 (two sessions), u1102, u1103
    $redis->select_cmd(1, 'SADD', 'im_group:77', 1101, 1102, 1103);
    ($s, $p) = api(9095, 'POST', '/api/publish',
        { gid => 77, payload => 'to the group' });
    is($s, 200, 'group publish: 200');
    is_deeply([map { "$_->{uid}:$_->{outcome}:$_->{sessions}" }
            sort { $a->{uid} <=> $b->{uid} } @{$p->{delivery}}],
        ['1101:pushed:2', '1102:pushed:1', '1103:stored:0'],
        'group publish: outcome per member');
    for my $c ($c1, $c2, $c3) {
        my $g = $c->expect(cmd => GROUP_PUBLISH, msgid => $p->{msgid});
        ok($g && $g->{gid} == 77, 'a member session gets the group message');
        $c->ack($p->{msgid}) if $g && $c == $c3;
    }

    # part of the group, as member u1102
    ($s, $p) = api(9096, 'POST', '/api/publish',
        { from => 1102, gid => 77, uids => [1101, 4242],
          payload => 'part' });
    is($s, 200, 'part-group publish: 200');
    is_deeply([map { $_->{uid} } @{$p->{delivery}}], [1101],
        'part-group: only the listed member (not a stranger)');
    ok($c1->expect(cmd => GROUP_PART_PUBLISH, msgid => $p->{msgid}),
        'u1101 gets the part-group message');

    # refused: the sender is not a member
    ($s, $p) = api(9095, 'POST', '/api/publish',
        { from => 4242, gid => 77, payload => 'intruder' });
    is($s, 409, 'a non-member sender: 409');
    like($p->{reason}, qr/4242 is not a member of group 77/,
        'the reason names the sender and the group');
}

###############################################################################
# inbox and recall

{
    my $keep = IM::Proto::msgid();
    my $gone = IM::Proto::msgid();
    my ($s, $p) = api(9095, 'POST', '/api/publish',
        { from => 1101, to => 1103, msgid => $gone, payload => 'oops' });
    is($s, 200, 'one more for u1103');
    ($s, $p) = api(9096, 'POST', '/api/publish',
        { to => 1103, msgid => $keep, payload => 'keep 2' });

    ($s, $p) = api(9096, 'GET', '/api/inbox?uid=1103');
    is($s, 200, 'inbox: 200');
    my @ids = map { $_->{msgid} } @{$p->{messages}};
    is(scalar @ids, 4, 'inbox: four messages');
    is($ids[2], $gone, 'inbox: oldest first, the third is the one to '
        . 'recall');
    my ($e) = grep { $_->{msgid} eq $gone } @{$p->{messages}};
    is_deeply([@$e{qw/from size/}], [1101, 4], 'inbox: sender and size');
    ok($e->{stored_at_ms} > 1e12 && $e->{stored_at_ms} <= time * 1000 + 1000,
        'inbox: stored at');
    my ($g) = grep { defined $_->{gid} } @{$p->{messages}};
    is($g && $g->{gid}, 77, 'inbox: the group message names its group');

    ($s, $p) = api(9095, 'DELETE', "/api/inbox?uid=1103,1102&msgid=$gone");
    is($s, 200, 'recall: 200');
    is_deeply([$p->{removed_from}, $p->{removed}, $p->{searched}],
        [[1103], 1, 2], 'recall: removed from the inbox of u1103 only');
    ($s, $p) = api(9095, 'DELETE', "/api/inbox?uid=1103&msgid=$gone");
    is_deeply($p->{removed_from}, [], 'recall again: nothing to remove');

    # by gid: the group message leaves every member's inbox
    ($s, $p) = api(9096, 'GET', '/api/inbox?uid=1103');
    my $gid_msg = $g->{msgid};
    ($s, $p) = api(9096, 'DELETE', "/api/inbox?gid=77&msgid=$gid_msg");
    is($s, 200, 'recall by gid: 200');
    ok(grep({ $_ == 1103 } @{$p->{removed_from}}),
        'recall by gid: removed from u1103');

    # u1103 logs in: what is left, not the recalled ones
    my ($c4, $code4) = login($nb, 1103);
    is($code4, 0, 'u1103 logs in on b');
    my @got = map { $_->{msgid} } grep { $_->{cmd} == PUBLISH }
        $c4->drain(3);
    ok((grep { $_ eq $keep } @got) && !(grep { $_ eq $gone } @got),
        'u1103 gets the kept message, not the recalled one');
    $c4->close;
}

###############################################################################
# kick

{
    # one ClientId, asked on a, the session on b
    my ($s, $p) = api(9095, 'POST', '/api/kick',
        { uid => 1101, client_id => 2 });
    is($s, 200, 'kick one ClientId: 200');
    is_deeply([map { "$_->{node}:$_->{client_id}" } @{$p->{sessions}}],
        ['b:2'], 'kick: the session it aims at');
    ok($c2->expect(cmd => LOGOUT), 'client 2 on b gets LOGOUT');
    ok($c2->wait_closed(10), 'and is closed');
    ok($c1->nothing_for(1), 'client 1 on a is left alone');

    # the whole uid, asked on b
    ($s, $p) = api(9096, 'POST', '/api/kick', { uid => 1101 });
    is($s, 200, 'kick a uid: 200');
    ok($c1->expect(cmd => LOGOUT), 'client 1 on a gets LOGOUT');
    ok($c1->wait_closed(10), 'and is closed');

    ok(wait_until(sub {
        my ($s, $p) = api(9096, 'GET', '/api/presence?uid=1101');
        return !$p->{users}[0]{online};
    }, 10), 'u1101 is offline afterwards');
}

###############################################################################
# bad input

{
    my @bad = (
        ['POST', '/api/publish', '{"to": 1102, "payload": ', 400,
            qr/malformed JSON/],
        ['POST', '/api/publish', '[1, 2]', 400, qr/JSON object/],
        ['POST', '/api/publish', '', 400, qr/JSON object/],
        ['POST', '/api/publish', { to => 1102, payload => 'x', colour => 1 },
            400, qr/unknown field "colour"/],
        ['POST', '/api/publish', { to => 1102 }, 400, qr/"payload"/],
        ['POST', '/api/publish', { to => 'x', payload => 'x' }, 400,
            qr/"to" must be a number/],
        ['POST', '/api/publish', { to => 1.5, payload => 'x' }, 400,
            qr/"to" must be a whole number/],
        ['POST', '/api/publish', { to => 1, gid => 2, payload => 'x' }, 400,
            qr/exactly one of/],
        ['POST', '/api/publish', { to => 1, msgid => 'short', payload => 'x' },
            400, qr/"msgid"/],
        ['POST', '/api/publish', { to => 1102, payload => 'x', wait => 60 },
            400, qr/"wait" must be a number of seconds from 0 to 30/],
        ['POST', '/api/kick', { client_id => 1 }, 400, qr/"uid" is missing/],
        ['POST', '/api/kick', { uid => 1101, client_id => 300 }, 400,
            qr/0 to 255/],
        ['GET', '/api/presence', undef, 400, qr/uid is missing/],
        ['GET', '/api/presence?uid=1,abc', undef, 400, qr/"abc" is not a uid/],
        ['GET', '/api/inbox?uid=1,2', undef, 400, qr/one uid at a time/],
        ['DELETE', '/api/inbox?uid=1', undef, 400, qr/msgid/],
        ['GET', '/api/publish', undef, 405, qr/not allowed/],
        ['GET', '/api/nothing', undef, 404, qr/no endpoint "nothing"/],
    );
    # every error answer counts once in im_api_errors_total
    my $errors = status(port(9095))->{api_errors};
    for my $x (@bad) {
        my ($m, $path, $body, $want, $re) = @$x;
        my $name = "$m $path " . (ref $body ? $json->encode($body)
            : $body // '');
        my ($s, $p, $raw) = api(9095, $m, $path, $body);
        is($s, $want, "$name: $want");
        like($p && $p->{reason} // '', $re, "$name: the reason");
        like($raw, qr{Content-Type: application/json}i, "$name: JSON");
    }
    is(status(port(9095))->{api_errors} - ($errors // -1000), scalar @bad,
        'each error answer counted once in api_errors');
}

###############################################################################
# access control

{
    my ($s) = api(9095, 'GET', '/denied/presence?uid=1102');
    is($s, 403, 'deny: 403');
    ($s) = api(9095, 'GET', '/guarded/presence?uid=1102');
    is($s, 401, 'auth_request without the token: 401');
    ($s) = api(9095, 'GET', '/guarded/presence?uid=1102', undef,
        'X-Api-Token' => 'wrong');
    is($s, 401, 'auth_request with a wrong token: 401');
    my $p;
    ($s, $p) = api(9095, 'GET', '/guarded/presence?uid=1102', undef,
        'X-Api-Token' => 's3cret');
    is($s, 200, 'auth_request with the token: 200');
    ok($p->{users}[0]{online}, 'and the answer');
}

###############################################################################
# a client that goes before the answer: the worker goes on

{
    for (1 .. 20) {
        my $sock = Test::Nginx::http_start(
            "GET /api/inbox?uid=1103 HTTP/1.0\r\nHost: localhost\r\n\r\n",
            port => port(9095));
        $sock->close if $sock;
    }
    my ($s) = api(9095, 'GET', '/api/presence?uid=1102');
    is($s, 200, 'clients that left early: the API still answers');
}

$c3->close;

Test::Nginx->done_testing();
