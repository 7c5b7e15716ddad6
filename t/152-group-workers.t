#!/usr/bin/perl
# Group members on different workers and nodes (issue 5 Tests; docs/PROTOCOL.md
# §3.3-3.4): worker_processes 2 with a reuseport listener spreads 40 members
# over both workers (the auth subrequest carries $im_worker, read back from
# the user centre's log); a second node (another nginx, im_node_id, same
# Redis) holds more members. Group and part-group messages sent from each
# worker and from the other node reach every member once; a member offline
# at send time gets it at its next login, wherever it lands. The TCP API of
# each node (uid 0) reaches members on every worker and node.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::TCP;
use IM::Proto qw/:all/;
use JSON::PP ();

my $t = Test::Nginx->new()->has(qw/http stream redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");

sub conf {
    my ($node, $port) = @_;
    return <<"EOF";
%%TEST_GLOBALS%%
daemon on;
worker_processes 2;
im_redis ${\ $redis->addr};
im_node_id $node;
# quiet re-push: check_all() reads up to 50 members one after another
# (seconds under load) and then checks nobody got a message twice; a
# re-push to one read late would be such a second copy
im_repush_interval 60s;
# quiet pings: a client the test does not read for a while cannot answer a
# PING, and a loaded machine can make that "while" longer than interval +
# timeout; no check here is about pings
im_ping_interval 300s;
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_$port%% reuseport;
        location /ws { im_websocket; im_auth /_auth; }
        ${\ $uc->auth_location(body => "username=\$im_username&password=\$im_password&worker=\$im_worker&node=$node") }
        location = /status { im_status; }
    }
}
stream {
    %%TEST_GLOBALS_STREAM%%
    server {
        listen 127.0.0.1:%%PORT_${port}1%% reuseport;
        im_tcp;
    }
}
EOF
}

$t->write_file_expand('nginx.conf', conf('node-a', 9095));
$t->run();

my $t2 = Test::Nginx->new();
$t2->write_file_expand('nginx.conf', conf('node-b', 9096));
$t2->run();

my $JSON = JSON::PP->new->utf8->canonical;
my %ACK_FOR = %IM::Proto::ACK_FOR;
my $GID = 300;
my @A = (3001 .. 3040);    # node-a
my @B = (3101 .. 3110);    # node-b
$redis->select_cmd(1, 'SADD', "im_group:$GID", @A, @B);

# log in many at once: handshakes, then every CONNECT, then the answers
sub login_all {
    my ($port, @uids) = @_;
    my %c;
    for my $u (@uids) {
        $c{$u} = IM::Client->new(port => port($port), auto_pong => 1, uid => $u);
        $c{$u}->send(connect_msg("u$u", 'pw'));
    }
    my $ok = 0;
    for my $u (@uids) {
        my $m = $c{$u}->expect(cmd => CONNECT_ACK);
        $ok++ if $m && $m->{code} == 0;
    }
    is($ok, scalar @uids, scalar(@uids) . " users log in on port $port");
    return %c;
}

# where each user's latest login ran: { uid => "node/worker" }
sub placement {
    my %w;
    for my $r ($uc->requests) {
        my $p = $r->{params};
        my ($u) = ($p->{username} // '') =~ /(\d+)/ or next;
        $w{$u} = "$p->{node}/$p->{worker}";
    }
    return %w;
}

my %cl = (login_all(9095, @A), login_all(9096, @B));
my %where = placement();
my %per;
$per{$where{$_} // '?'}++ for @A, @B;
diag(join ', ', map { "$_: $per{$_}" } sort keys %per);
ok($per{'node-a/0'} && $per{'node-a/1'}, 'node-a members are on both workers')
    or diag(explain \%per);
ok($per{'node-b/0'} || $per{'node-b/1'}, 'node-b holds members');

sub payload {
    my ($from, $text) = @_;
    return $JSON->encode({ from => $from, to => $GID,
        content => { type => 'text', text => $text } });
}

# every client but the sender gets exactly one push of $id, in $cmd format
sub check_all {
    my ($name, $id, $push, $sender, @to) = @_;
    my (%got, @bad);
    for my $u (@to) {
        my $m = $cl{$u}->expect(msgid => $id);
        if ($m && $m->{raw} eq $push) {
            $got{$u} = 1;
            $cl{$u}->ack($id, cmd => $ACK_FOR{$m->{cmd}});
        } else {
            push @bad, $u;
        }
    }
    is(scalar keys %got, scalar @to, "$name: all " . scalar(@to) . ' recipients got it')
        or diag("missing: @bad; placement: "
            . join ' ', map { "$_=" . ($where{$_} // '?') } @bad);
    # exactly once: nothing more for anyone, the sender included
    my @dup = grep { my $u = $_; grep { ($_->{msgid} // '') eq $id }
        $cl{$u}->drain(0) } @to, grep { defined } $sender;
    select undef, undef, undef, 0.3;
    push @dup, grep { my $u = $_; grep { ($_->{msgid} // '') eq $id }
        $cl{$u}->drain(0.01) } @to, grep { defined } $sender;
    is("@dup", '', "$name: nobody gets it twice, the sender never");
}

# a sender on each worker of node-a, and one on node-b
my ($s0) = grep { $where{$_} eq 'node-a/0' } @A;
my ($s1) = grep { $where{$_} eq 'node-a/1' } @A;
for my $s (grep { defined } $s0, $s1, $B[0]) {
    my $p = payload($s, "from $s");
    my $id = $cl{$s}->group_publish($GID, $p, raw => 1);
    ok($cl{$s}->expect(cmd => GROUP_PUB_ACK, msgid => $id, timeout => 5),
        "$s ($where{$s}): GROUP_PUB_ACK");
    check_all("group from $where{$s}", $id, group_push_msg($GID, $id, $p),
        $s, grep { $_ != $s } @A, @B);
}

# part-group: a few from each place, with a duplicate and a non-member
{
    my ($x0) = grep { $where{$_} eq 'node-a/0' && $_ != $s0 } @A;
    my ($x1) = grep { $where{$_} eq 'node-a/1' && $_ != ($s1 // 0) } @A;
    my @to = grep { defined } $x0, $x1, $B[1], $B[2];
    my @list = (@to, $to[0], 9999, $s0);
    my $p = payload($s0, 'part');
    my $id = $cl{$s0}->part_publish($GID, \@list, $p, raw => 1);
    ok($cl{$s0}->expect(cmd => GROUP_PART_PUB_ACK, msgid => $id, timeout => 5),
        'part-group: GROUP_PART_PUB_ACK');
    check_all('part-group across workers and nodes', $id,
        part_push_msg($GID, $id, \@list, $p), $s0, @to);
    my %listed = map { $_ => 1 } @list;
    my @others = grep { !$listed{$_} } @A, @B;
    my @leak = grep { my $u = $_; grep { ($_->{msgid} // '') eq $id }
        $cl{$u}->drain(0.005) } @others;
    is("@leak", '', 'part-group: members not listed get nothing');
}

# the TCP API (uid 0) on each node: every member, whatever worker
for my $port (90951, 90961) {
    my $c = IM::TCP->new(port => port($port));
    my $p = payload(0, "tcp $port");
    my $id = msgid();
    my $m = $c->request(group_publish_msg($GID, $id, $p), 5);
    is($m && hexdump($m->{raw}), hexdump(group_pub_ack($id)),
        "TCP API ($port): GROUP_PUBLISH as uid 0 answered");
    check_all("TCP group via port $port", $id, group_push_msg($GID, $id, $p),
        undef, @A, @B);
    my @list = (@A[0 .. 4], @B[0 .. 2], 9999);
    my $id2 = msgid();
    $m = $c->request(part_publish_msg($GID, $id2, \@list, $p), 5);
    is($m && hexdump($m->{raw}), hexdump(part_pub_ack($id2)),
        "TCP API ($port): GROUP_PART_PUBLISH as uid 0 answered");
    check_all("TCP part-group via port $port", $id2,
        part_push_msg($GID, $id2, \@list, $p), undef, @A[0 .. 4], @B[0 .. 2]);
    my @leak = grep { my $u = $_; grep { ($_->{msgid} // '') eq $id2 }
        $cl{$u}->drain(0.005) } @A[5 .. $#A], @B[3 .. $#B];
    is("@leak", '', "TCP part-group via port $port: members not listed get nothing");
    $c->close;
}

# offline member: message while away, delivered at the next login
{
    my $u = $A[-1];
    $cl{$u}->close(1000);
    $cl{$u}->wait_closed(2);
    select undef, undef, undef, 0.3;
    my $p = payload($B[0], 'while away');
    my $id = $cl{$B[0]}->group_publish($GID, $p, raw => 1);
    ok($cl{$B[0]}->expect(cmd => GROUP_PUB_ACK, msgid => $id, timeout => 5),
        'sent from node-b with a member offline');
    check_all('online ones', $id, group_push_msg($GID, $id, $p), $B[0],
        grep { $_ != $u && $_ != $B[0] } @A, @B);
    my %again = login_all(9095, $u);
    $cl{$u} = $again{$u};
    my $m = $cl{$u}->next;
    is($m && hexdump($m->{raw}), hexdump(group_push_msg($GID, $id, $p)),
        'the offline member gets the original push after login');
    $cl{$u}->ack($id, cmd => GROUP_PUB_ACK) if $m;
}

for my $c (values %cl) {
    $c->close(1000);
}
$_->wait_closed(2) for values %cl;

$t->done_testing();
