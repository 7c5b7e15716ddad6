#!/usr/bin/perl
# Owed group messages (docs/decisions/052-group-owe-records.md) and a
# second device of the member on another node: two nodes on one Redis,
# one worker each. A member on node a holds an owed group message
# unacked (no inbox append); its second device logs in on node b and reads
# the inbox on a's answer to its announcement, which a gives only after
# appending what its session owes: the device on b is pushed the message.
# A later ack on a removes it from the inbox.
#
# A recall on b's admin API while a member on a owes a message: the
# record on a clears it (the uid's channel), so its close appends nothing
# and its next login is not pushed the message.
#
# Then node a is lost for good (kill -9 of its master and worker) while
# members owe two messages on it: they log in on b, and once a's lease
# (im_group_owe_lease 3s here) has run out a worker of b adopts a's
# records: each member is pushed both, in order, and a's hash is emptied
# and leaves the registry. Without the adoption nothing comes.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get http/;
use JSON::PP;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Cluster qw/login status/;

my %TIMERS = (
    # quiet pings and re-pushes: what comes is what was pushed or stored
    im_ping_interval   => '300s',
    im_ping_timeout    => '5s',
    im_repush_interval => '60s',
    im_repush_max      => '3',
    im_close_grace     => '1s',
    im_inbox_batch     => '0',
    # a lost node's records adopted soon (decision 052)
    im_group_owe_lease => '3s',
);

my $t0 = Test::Nginx->new()->has(qw/http redis/);    # holds the helpers
my $redis = IM::Redis->new(t => $t0);
my $uc = IM::UserCentre->new(t => $t0, users => "* * uid-from-name\n");

my $a = IM::Cluster::node(name => 'a', port => 9095, workers => 1,
    redis => $redis, uc => $uc, status => 1, timers => \%TIMERS);
my $b = IM::Cluster::node(name => 'b', port => 9096, workers => 1,
    redis => $redis, uc => $uc, status => 1, timers => \%TIMERS,
    locations => 'location /api/ { im_api; }');
$a->run();
$b->run();

my $GID = 510;
my @on = 4002 .. 4004;
$redis->select_cmd(1, 'SADD', "im_group:$GID", 4001, @on);

sub user {
    my ($t, $uid, %o) = @_;
    my ($c, $code) = login($t, $uid, auto_ack => 0, %o);
    is($code, 0, "u$uid logs in on node $t->{im_name}"
        . ($o{client_id} ? " (device $o{client_id})" : ''));
    return $c;
}

sub inbox {
    my ($uid, @ids) = @_;
    return join ' ', $redis->inbox_ids($uid, @ids);
}

sub owed { status(port(9095))->{group_owed} // -1 }

sub pushed {
    my ($c) = @_;
    while (my $m = $c->next(timeout => 30)) {
        return $m->{msgid}
            if $m->{cmd} == PUBLISH || $m->{cmd} == GROUP_PUBLISH;
    }
    return '';
}

my $s = user($a, 4001);
my %m = map { $_ => user($a, $_) } @on;

# a first message: its PUBLISHes tell that each member is alone on a
my $w = $s->group_publish($GID, 'first');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $w, timeout => 30), 'first');
for my $u (@on) {
    is(pushed($m{$u}), $w, "u$u is pushed it");
    $m{$u}->ack($w, cmd => GROUP_PUB_ACK);
}
ok(wait_until(sub { !grep { ($redis->cmd(LLEN => "im:inbox:$_") // -1) }
        @on }, 20), 'their acks empty the inboxes');

my $owed = owed();
my $g = $s->group_publish($GID, 'owed');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $g, timeout => 30), 'g');
is(owed() - $owed, scalar @on, 'every member owes g');
for my $u (@on) {
    is(pushed($m{$u}), $g, "u$u is pushed g");
    $m{$u}->ack($g, cmd => GROUP_PUB_ACK) unless $u == 4002;
}
is(inbox(4002, $g), '', 'u4002 does not ack: no inbox holds g');

my $x2 = user($b, 4002, client_id => 2);
is(pushed($x2), $g, 'its device on b is pushed g from the inbox');
is(inbox(4002, $g), $g, 'a appended it before answering');

$m{4002}->ack($g, cmd => GROUP_PUB_ACK);
ok(wait_until(sub { inbox(4002, $g) eq '' }, 20),
    'the ack on a removes it');
ok(wait_until(sub {
        my $k = $redis->cmd(KEYS => 'im:owe:*') // [];
        !grep { ($redis->cmd(HLEN => $_) // 0) } @$k }, 20),
    'no record left');

$x2->close;

###############################################################################
# a recall on b reaches the record on a

sub metric_a {
    my ($name) = @_;
    my $r = http_get('/status', port => port(9095)) // '';
    return $r =~ /"$name":\s*(\d+)/ ? $1 : -1;
}

my $z0 = $s->group_publish($GID, 'z0');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $z0, timeout => 30), 'z0');
for my $u (@on) {
    is(pushed($m{$u}), $z0, "u$u is pushed z0");
    $m{$u}->ack($z0, cmd => GROUP_PUB_ACK);
}
my $cv = $s->group_publish($GID, 'recalled');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $cv, timeout => 30),
    'a message to recall');
for my $u (@on) {
    is(pushed($m{$u}), $cv, "u$u is pushed it");
    $m{$u}->ack($cv, cmd => GROUP_PUB_ACK) unless $u == 4004;
}
is(inbox(4004, $cv), '', 'u4004 owes it: no inbox holds it');
my $recalled = metric_a('group_owe_recalled');
my $r = http("DELETE /api/inbox?gid=$GID&msgid=$cv HTTP/1.0\r\n"
    . "Host: localhost\r\n\r\n", port => port(9096)) // '';
like($r, qr{^HTTP/1\.\d 200}, 'recall by gid on b: 200');
ok(wait_until(sub { metric_a('group_owe_recalled') == $recalled + 1 }, 20),
    "a's record clears u4004");
$m{4004}->close;
my $after = $s->publish(4004, 'after the recall');
ok($s->expect(cmd => PUB_ACK, msgid => $after, timeout => 30),
    'a 1:1 message to u4004 after its close');
$m{4004} = user($a, 4004);
is(pushed($m{4004}), $after,
    'at its login u4004 is pushed the 1:1 message, not the recalled one');
$m{4004}->ack($after);
ok(wait_until(sub { inbox(4004, $cv, $after) eq '' }, 20),
    'its inbox is empty');

###############################################################################
# node a lost for good with members owing: b adopts its records

# u4002's second device came and went: a first message learns again that
# each member is alone on a
my $v0 = $s->group_publish($GID, 'v0');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $v0, timeout => 30), 'v0');
for my $u (@on) {
    is(pushed($m{$u}), $v0, "u$u is pushed v0");
    $m{$u}->ack($v0, cmd => GROUP_PUB_ACK);
}
ok(wait_until(sub { !grep { ($redis->cmd(LLEN => "im:inbox:$_") // -1) }
        @on }, 20), 'nothing stored');

$owed = owed();
my @h;
for my $i (1 .. 2) {
    my $id = $s->group_publish($GID, "h$i");
    ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $id, timeout => 30),
        "h$i accepted");
    push @h, $id;
}
# u4002's second device on b may not be known gone yet: it may be appended
# as before; u4003 and u4004 owe
my @owing = (4003, 4004);
cmp_ok(owed() - $owed, '>=', 2 * @owing, 'u4003 and u4004 owe h1 and h2');
for my $u (@on) {
    is(join(' ', pushed($m{$u}), pushed($m{$u})), "@h",
        "u$u is pushed h1 h2 and acks neither");
}
is(scalar(grep { inbox($_, @h) ne '' } @owing), 0,
    'neither inbox holds them');
my $akey = 'im:owe:a:0';
is($redis->cmd(HLEN => $akey), 2, "two records in $akey");
ok(grep({ $_ eq $akey } @{ $redis->cmd(SMEMBERS => 'im:owe_nodes') // [] }),
    "$akey is in the registry");
ok(($redis->cmd(PTTL => 'im:owe_lease:a') // -2) > 0, "a's lease is set");

my @procs = ($a->master_pid, $a->worker_pids);
kill 'KILL', @procs;
ok(wait_until(sub { !grep { Test::Nginx::alive($_) } @procs }, 10),
    'node a is gone for good');
ok($m{$on[0]}->wait_closed(20), 'its sessions closed');

my %n = map { $_ => user($b, $_) } @on;
for my $u (@on) {
    # bounded: the lease (3 s), b's check a third of it apart, twice over
    is(join(' ', pushed($n{$u}), pushed($n{$u})), "@h",
        "u$u, on b, is pushed h1 h2 once a's records are adopted");
    $n{$u}->ack($_, cmd => GROUP_PUB_ACK) for @h;
}
ok(wait_until(sub { ($redis->cmd(HLEN => $akey) // -1) == 0 }, 30),
    "$akey is emptied");
ok(wait_until(sub { !grep { $_ eq $akey }
        @{ $redis->cmd(SMEMBERS => 'im:owe_nodes') // [] } }, 30),
    'and leaves the registry');
ok(wait_until(sub { !grep { inbox($_, @h) ne '' } @on }, 20),
    'the acks on b empty the inboxes');

$b->stop();
$t0->done_testing();
