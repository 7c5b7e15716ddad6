#!/usr/bin/perl
# Write-through group messages owed instead of appended
# (docs/decisions/052-group-owe-records.md): a group member with a session
# on this worker only gets no inbox append; one record per message (a
# field of the hash im:owe:<node>:<slot>) says who still owes an ack.
#
#   - online members are pushed, their inboxes stay empty, the record is
#     there until the last ack and goes after it;
#   - a member that closes with owed messages unacked, and a 1:1 message
#     (stored) between them, finds them at its next login in the order
#     sent (the late append goes before the later stored entry);
#   - kill -9 of the worker with some members not acking: the respawned
#     worker sweeps the dead process's records, and every member that had
#     not acked gets every message, in order, at its next login;
#   - a recall (DELETE /api/inbox by gid) while a member owes the
#     message: its record clears the member, the answer counts it, and
#     neither its close nor its next login brings the message back;
#   - a reload while members hold owed messages: the new worker does not
#     sweep the old worker's records (it still runs); the old one appends
#     what its closing sessions did not ack, once each, and clears its
#     records.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get http/;
use JSON::PP;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/standard/;

# no re-push and no ping within the test: what comes is what was pushed
# or stored; removals of acks sent at once (decision 051)
my ($t, $redis) = standard(stream => 0,
    users => "* * uid-from-name\n",
    main => "im_repush_interval 60s;\nim_ping_interval 300s;\n"
        . "im_close_grace 1s;\nim_inbox_batch 0;",
    locations => 'location /api/ { im_api; }');
$t->allow_alerts(qr/exited on signal 9/);

my $GID = 500;
my @on = 1002 .. 1011;
$redis->select_cmd(1, 'SADD', "im_group:$GID", 1001, @on);

sub user {
    my ($uid, %o) = @_;
    my $c = IM::Client->new(port => port(9095), auto_pong => 1,
        uid => $uid, %o);
    is($c->login("u$uid", 'pw', timeout => 20), 0, "u$uid logs in");
    return $c;
}

sub metric {
    my ($name) = @_;
    my $r = http_get('/metrics', port => port(9095)) // '';
    return $r =~ /^$name (\d+)$/m ? $1 : -1;
}

# the records: the one hash of worker slot 0
sub records {
    my $keys = $redis->cmd(KEYS => 'im:owe:*') // [];
    return 0 unless @$keys;
    return $redis->cmd(HLEN => $keys->[0]) // 0;
}

sub inbox {
    my ($uid, @ids) = @_;
    return join ' ', $redis->inbox_ids($uid, @ids);
}

# the next n pushes' MsgIds (group or 1:1)
sub pushed {
    my ($c, $n) = @_;
    my @got;
    while (@got < $n) {
        my $m = $c->next(timeout => 30) or last;
        push @got, $m->{msgid}
            if $m->{cmd} == PUBLISH || $m->{cmd} == GROUP_PUBLISH;
    }
    return "@got";
}

my $s = user(1001);
my %m = map { $_ => user($_) } @on;

# a first message: its PUBLISHes tell that each member is alone here
my $w = $s->group_publish($GID, 'first');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $w, timeout => 30),
    'a first group message accepted');
for my $u (@on) {
    is(pushed($m{$u}, 1), $w, "u$u is pushed it");
    $m{$u}->ack($w, cmd => GROUP_PUB_ACK);
}
ok(wait_until(sub { !grep { ($redis->cmd(LLEN => "im:inbox:$_") // -1) }
        @on }, 20), 'their acks empty the inboxes');
ok(wait_until(sub { records() == 0 }, 20), 'no record left');

###############################################################################
# owed: pushed, no appends, one record until the last ack

my $owed = metric('im_group_owed_total');
my $g = $s->group_publish($GID, 'owed');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $g, timeout => 30),
    'an owed group message accepted');
my $bad = grep { pushed($m{$_}, 1) ne $g } @on;
is($bad, 0, 'every member is pushed it');
is(metric('im_group_owed_total') - $owed, scalar @on,
    'every member was owed');
is(scalar(grep { ($redis->cmd(LLEN => "im:inbox:$_") // 0) } @on), 0,
    'no inbox was appended to');
is(records(), 1, 'one record for the message');
$m{$_}->ack($g, cmd => GROUP_PUB_ACK) for @on[0 .. $#on - 1];
$m{$on[-1]}->ping;
ok($m{$on[-1]}->expect(cmd => PING_RESP, timeout => 20), 'nine acks taken');
is(records(), 1, 'the record stays while a member owes');
$m{$on[-1]}->ack($g, cmd => GROUP_PUB_ACK);
ok(wait_until(sub { records() == 0 }, 20), 'the last ack clears it');
is(scalar(grep { ($redis->cmd(LLEN => "im:inbox:$_") // 0) } @on), 0,
    'and no inbox holds it');

###############################################################################
# a session closing unacked: at the next login in the order sent

my $late = metric('im_group_owe_appended_total');
my $x = $m{1002};
my $g1 = $s->group_publish($GID, 'g1');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $g1, timeout => 30), 'g1');
my $d1 = $s->publish(1002, 'd1');
ok($s->expect(cmd => PUB_ACK, msgid => $d1, timeout => 30), 'd1 (1:1)');
my $g2 = $s->group_publish($GID, 'g2');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $g2, timeout => 30), 'g2');
is(pushed($x, 3), "$g1 $d1 $g2", 'u1002 is pushed g1 d1 g2, acks none');
for my $u (@on[1 .. $#on]) {
    is(pushed($m{$u}, 2), "$g1 $g2", "u$u is pushed g1 g2");
    $m{$u}->ack($_, cmd => GROUP_PUB_ACK) for $g1, $g2;
}
is(inbox(1002, $g1, $d1, $g2), $d1, 'only the 1:1 message is stored');
$x->close;
ok(wait_until(sub { inbox(1002, $g1, $d1, $g2) eq "$g1 $d1 $g2" }, 20),
    "u1002's inbox holds g1 d1 g2 in that order after it left")
    or diag('inbox: ' . inbox(1002, $g1, $d1, $g2));
is(metric('im_group_owe_appended_total') - $late, 2,
    'two late appends');
ok(wait_until(sub { records() == 0 }, 20), 'the records are cleared');
$x = $m{1002} = user(1002);
is(pushed($x, 3), "$g1 $d1 $g2", 'at its login u1002 is pushed them in order');
$x->ack($_, cmd => GROUP_PUB_ACK) for $g1, $g2;
$x->ack($d1);
ok(wait_until(sub { ($redis->cmd(LLEN => 'im:inbox:1002') // -1) == 0 },
    20), 'its acks empty the inbox');

###############################################################################
# a second device logging in while the first owes: its inbox read finds
# what the first has not acked, before what came later

# u1002 logged in again: a first message learns that it is alone here
my $y0 = $s->group_publish($GID, 'y0');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $y0, timeout => 30), 'y0');
for my $u (@on) {
    is(pushed($m{$u}, 1), $y0, "u$u is pushed y0");
    $m{$u}->ack($y0, cmd => GROUP_PUB_ACK);
}
ok(wait_until(sub { ($redis->cmd(LLEN => 'im:inbox:1002') // -1) == 0 },
    20), 'its inbox is empty');
$owed = metric('im_group_owed_total');
my $y1 = $s->group_publish($GID, 'y1');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $y1, timeout => 30), 'y1');
is(metric('im_group_owed_total') - $owed, scalar @on, 'every member owes y1');
is(inbox(1002, $y1), '', 'no inbox holds it');
is(pushed($x, 1), $y1, 'u1002 is pushed y1, does not ack');
for my $u (@on[1 .. $#on]) {
    is(pushed($m{$u}, 1), $y1, "u$u is pushed y1");
    $m{$u}->ack($y1, cmd => GROUP_PUB_ACK);
}
my $x2 = IM::Client->new(port => port(9095), auto_pong => 1, uid => 1002);
is($x2->login('u1002', 'pw', client_id => 2, timeout => 20), 0,
    'u1002 logs in on a second device');
is(pushed($x2, 1), $y1, 'the second device is pushed y1 from the inbox');
my $d2 = $s->publish(1002, 'd2');
ok($s->expect(cmd => PUB_ACK, msgid => $d2, timeout => 30), 'd2');
is(pushed($x2, 1), $d2, 'and then d2');
$x->ack($y1, cmd => GROUP_PUB_ACK);
is(pushed($x, 1), $d2, 'the first device is pushed d2');
$x->ack($d2);
ok(wait_until(sub { ($redis->cmd(LLEN => 'im:inbox:1002') // -1) == 0 },
    20), "the first device's acks empty the inbox");
ok(wait_until(sub { records() == 0 }, 20), 'no record left');
$x2->close;

###############################################################################
# a recall while a member owes: no late append puts the message back

# u1002's second device came and went: a first message learns again that
# each member is alone here
my $v0 = $s->group_publish($GID, 'v0');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $v0, timeout => 30), 'v0');
for my $u (@on) {
    is(pushed($m{$u}, 1), $v0, "u$u is pushed v0");
    $m{$u}->ack($v0, cmd => GROUP_PUB_ACK);
}
ok(wait_until(sub { records() == 0
        && !grep { ($redis->cmd(LLEN => "im:inbox:$_") // -1) } @on }, 20),
    'nothing stored, no record');
my $holder = 1003;
$owed = metric('im_group_owed_total');
my $cv = $s->group_publish($GID, 'recalled');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $cv, timeout => 30),
    'a message to recall accepted');
is(metric('im_group_owed_total') - $owed, scalar @on, 'every member owes it');
for my $u (@on) {
    is(pushed($m{$u}, 1), $cv, "u$u is pushed it");
    $m{$u}->ack($cv, cmd => GROUP_PUB_ACK) unless $u == $holder;
}
$m{$holder}->ping;
ok($m{$holder}->expect(cmd => PING_RESP, timeout => 20), 'the acks taken');
is(records(), 1, "its record stays: u$holder owes it");
is(inbox($holder, $cv), '', "u${holder}'s inbox does not hold it");

my $r = http("DELETE /api/inbox?gid=$GID&msgid=$cv HTTP/1.0\r\n"
    . "Host: localhost\r\n\r\n", port => port(9095)) // '';
my ($code) = $r =~ m{^HTTP/1\.\d (\d+)};
my ($body) = $r =~ /\r\n\r\n(.*)\z/s;
my $p = eval { JSON::PP->new->decode($body // '') } // {};
is($code, 200, 'recall by gid: 200');
is($p->{owed_cleared}, 1, 'recall: one owing member cleared')
    or diag($body);
is_deeply($p->{removed_from}, [], 'recall: no inbox held it');
is(metric('im_group_owe_recalled_total'), 1, 'im_group_owe_recalled_total');
ok(wait_until(sub { records() == 0 }, 20),
    'the record goes: no member owes it');

$late = metric('im_group_owe_appended_total');
$m{$holder}->close;
# a 1:1 message after the close, stored: the next login gets what the
# inbox holds, the recalled message first if a late append put it back
my $after = $s->publish($holder, 'after the recall');
ok($s->expect(cmd => PUB_ACK, msgid => $after, timeout => 30),
    'a 1:1 message to the holder after its close');
$m{$holder} = user($holder);
is(pushed($m{$holder}, 1), $after,
    'at its login the holder is pushed the 1:1 message, not the recalled one');
is(inbox($holder, $cv, $after), $after,
    "u${holder}'s inbox holds the 1:1 message only");
is(metric('im_group_owe_appended_total') - $late, 0, 'no late append');
$m{$holder}->ack($after);
ok(wait_until(sub { ($redis->cmd(LLEN => "im:inbox:$holder") // -1) == 0 },
    20), 'its ack empties the inbox');

###############################################################################
# kill -9 with members owing: the respawned worker delivers them again

my @ackers = @on[0 .. 4];
my @owers = @on[5 .. $#on];
my @g;
for my $i (1 .. 3) {
    my $id = $s->group_publish($GID, "k$i");
    ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $id, timeout => 30),
        "k$i accepted");
    push @g, $id;
}
for my $u (@on) {
    is(pushed($m{$u}, 3), "@g", "u$u is pushed k1 k2 k3");
    next unless grep { $_ == $u } @ackers;
    $m{$u}->ack($_, cmd => GROUP_PUB_ACK) for @g;
}
is(records(), 3, 'the records of k1 k2 k3 stay');
is(scalar(grep { ($redis->cmd(LLEN => "im:inbox:$_") // 0) } @on), 0,
    'no inbox holds them');

my ($dead) = $t->worker_pids;
my $mark = $t->log_mark;
kill 'KILL', $dead;
ok($t->wait_for_log(qr/worker process $dead exited on signal 9/,
    from => $mark), 'the worker was killed');
ok($t->wait_for_log(qr/im owe: sweep of \S+: 3 records, 3 of gone/,
    from => $mark, timeout => 30), 'the respawned worker sweeps its records');
ok(wait_until(sub { records() == 0 }, 30),
    'they are cleared once delivered again');
for my $u (@owers) {
    is(inbox($u, @g), "@g", "u${u}'s inbox holds k1 k2 k3 in order");
}
$s = user(1001);
for my $u (@on) {
    $m{$u} = user($u);
}
for my $u (@owers) {
    is(pushed($m{$u}, 3), "@g", "u$u is pushed k1 k2 k3 at its login");
    $m{$u}->ack($_, cmd => GROUP_PUB_ACK) for @g;
}
# an acker may get them again: a duplicate PROTOCOL.md 5 allows after a
# crash
for my $u (@ackers) {
    my $l = $redis->cmd(LLEN => "im:inbox:$u") // 0;
    $m{$u}->ack($_, cmd => GROUP_PUB_ACK) for @g;
    pushed($m{$u}, $l) if $l;
}
ok(wait_until(sub { !grep { ($redis->cmd(LLEN => "im:inbox:$_") // -1) }
        @on }, 20), 'the inboxes are empty again');

###############################################################################
# reload: the old worker's records are not the new one's to sweep

# the first message after the respawn learns again that each is alone
my $r0 = $s->group_publish($GID, 'r0');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $r0, timeout => 30), 'r0');
for my $u (@on) {
    is(pushed($m{$u}, 1), $r0, "u$u is pushed r0");
    $m{$u}->ack($r0, cmd => GROUP_PUB_ACK);
}
ok(wait_until(sub { records() == 0
        && !grep { ($redis->cmd(LLEN => "im:inbox:$_") // -1) } @on }, 20),
    'nothing stored');

my $r1 = $s->group_publish($GID, 'r1');
ok($s->expect(cmd => GROUP_PUB_ACK, msgid => $r1, timeout => 30), 'r1');
for my $u (@on) {
    is(pushed($m{$u}, 1), $r1, "u$u is pushed r1");
    $m{$u}->ack($r1, cmd => GROUP_PUB_ACK) if grep { $_ == $u } @ackers;
}
is(records(), 1, 'its record stays');

my ($old) = $t->worker_pids;
$mark = $t->log_mark;
$t->reload;
my ($new) = grep { $_ != $old } $t->worker_pids;
ok($t->wait_for_log(qr/im owe: sweep of \S+: (no records|\d+ records, 0 of)/,
    from => $mark, timeout => 30), 'the new worker swept nothing');
ok(wait_until(sub { !grep { $_ == $old } $t->worker_pids }, 30),
    'the old worker is gone');
ok(wait_until(sub { records() == 0 }, 20), 'its record is cleared');
for my $u (@owers) {
    is(inbox($u, $r1), $r1, "u${u}'s inbox holds r1 once");
}
for my $u (@ackers) {
    is(inbox($u, $r1), '', "u${u}'s inbox is empty");
}

$t->done_testing();
