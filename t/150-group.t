#!/usr/bin/perl
# Groups over WebSocket (docs/PROTOCOL.md §3.3, §3.4, §6; issue 5):
# membership from the real Redis set im_group:<gid> in db 1, changed between
# messages; the exact GROUP_PUBLISH push and GROUP_PUB_ACK; a non-member
# sender refused (session stays); the sender never receives its own message;
# GROUP_PART_PUBLISH with non-members and duplicates (each member once, the
# uid list pushed as given); an empty part-group result refused; offline
# members served after login with the original Gid and push format; acks
# 4, 6 and 12 all count for either push; payload over im_max_payload refused;
# pushes never acked: re-pushed, session closed after the re-pushes,
# redelivered at login.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf/;
use JSON::PP ();
use Time::HiRes qw/time/;

my $t = Test::Nginx->new()->has(qw/http redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");

# Two configurations. Quiet: no re-push within the test (60 s), so a
# client that reads late (a loaded machine) gets nothing it did not ask for
# and "nothing more" means no duplicate; whether an ack counted is seen at
# the next login (an unacked message is pushed again then). Re-push (1 s,
# one re-push, then the session is closed): only for the part that checks
# re-pushes, where timing only decides how long the test waits.
my $QUIET = 'im_repush_interval 60s; im_repush_max 1; im_max_payload 1000;';
my $REPUSH = 'im_repush_interval 1s; im_repush_max 1; im_max_payload 1000;';

write_conf($t, redis => $redis, uc => $uc, stream => 0, main => $QUIET);
$t->run();

my $JSON = JSON::PP->new->utf8->canonical;
my $GID = 100;

sub sadd { my $g = shift; $redis->select_cmd(1, 'SADD', "im_group:$g", @_) }
sub srem { my $g = shift; $redis->select_cmd(1, 'SREM', "im_group:$g", @_) }

sub user {
    my ($uid) = @_;
    my $c = IM::Client->new(port => port(9095), auto_pong => 1, uid => $uid);
    my $code = $c->login("u$uid", 'pw');
    is($code, 0, "u$uid logs in");
    return $c;
}

sub payload {
    my ($from, $to, $text) = @_;
    return $JSON->encode({ from => $from, to => $to,
        content => { type => 'text', text => $text } });
}

# alive and unharmed: PING answered
sub alive {
    my ($c) = @_;
    $c->ping;
    return $c->expect(cmd => PING_RESP, timeout => 2) ? 1 : 0;
}

sub hex_of { defined $_[0] ? hexdump($_[0]) : 'undef' }

sadd($GID, 1001, 1002, 1003);

my $a = user(1001);
my $b = user(1002);
my $c = user(1003);
my $d = user(1004);

###############################################################################
# GROUP_PUBLISH: exact bytes, sender excluded, non-members excluded

my $p1 = payload(1001, $GID, 'hello group');
my $id1 = $a->group_publish($GID, $p1, raw => 1);

my $ack = $a->expect(cmd => GROUP_PUB_ACK);
is(hex_of($ack && $ack->{raw}), hexdump(group_pub_ack($id1)),
    'GROUP_PUB_ACK is exactly <<6, MsgId>>');

for my $r ([$b, 1002], [$c, 1003]) {
    my ($cl, $uid) = @$r;
    my $m = $cl->expect(cmd => GROUP_PUBLISH);
    is(hex_of($m && $m->{raw}), hexdump(group_push_msg($GID, $id1, $p1)),
        "member $uid gets exactly <<5, Gid, MsgId, Len, Payload>>");
    $cl->ack($id1, cmd => GROUP_PUB_ACK);
}
ok($d->nothing_for(0.5), 'a non-member gets nothing');
ok($a->nothing_for(0.3), 'the sender does not get its own group message');

###############################################################################
# membership changed between messages

srem($GID, 1003);
sadd($GID, 1004);

my $id2 = $a->group_publish($GID, payload(1001, $GID, 'after change'), raw => 1);
ok($a->expect(cmd => GROUP_PUB_ACK, msgid => $id2), 'acked after the change');
for my $r ([$b, 1002], [$d, 1004]) {
    my ($cl, $uid) = @$r;
    my $m = $cl->expect(cmd => GROUP_PUBLISH);
    ok($m && $m->{msgid} eq $id2 && $m->{gid} == $GID,
        "current member $uid receives");
    $cl->ack($id2, cmd => GROUP_PUB_ACK);
}
ok($c->nothing_for(0.5), 'a removed member (1003) stops receiving');

###############################################################################
# a non-member sender is refused: <<10, 5, MsgId>>, no ack, session stays

my $id3 = $c->group_publish($GID, payload(1003, $GID, 'not a member'), raw => 1);
my $m = $c->next;
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PUBLISH, $id3)),
    'non-member sender gets <<10, 5, MsgId>>');
ok($c->nothing_for(0.5), '... and no GROUP_PUB_ACK');
ok(alive($c), '... and the session stays');
ok($a->nothing_for(0.2) && $b->nothing_for(0.2) && $d->nothing_for(0.2),
    '... and nobody receives the refused message');

# a group that does not exist: nobody is a member
my $id3b = $a->group_publish(999, payload(1001, 999, 'nobody'), raw => 1);
$m = $a->next;
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PUBLISH, $id3b)),
    'group without a set: refused <<10, 5, MsgId>>');
ok(alive($a), '... session stays');

# a member whose group has no other member: nobody to deliver to.
# Not an error by §3.3 (no recipients dropped); either an ack or a refusal
# would be arguable, so only check the session is fine.
sadd(998, 1001);
$a->group_publish(998, payload(1001, 998, 'alone'), raw => 1);
$m = $a->next;
ok($m && ($m->{cmd} == GROUP_PUB_ACK || $m->{cmd} == INVALID_PACKET),
    'a group of only the sender: answered (' . ($m ? $m->{name} : 'nothing') . ')');
ok(alive($a), '... session stays');

# payload over im_max_payload: refusal, session stays
my $big = 'x' x 1001;
my $id3c = $a->group_publish($GID, $big, raw => 1);
$m = $a->next;
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PUBLISH, $id3c)),
    'group payload over im_max_payload: <<10, 5, MsgId>>');
ok(alive($a), '... session stays');
ok($b->nothing_for(0.3), '... nothing delivered');

###############################################################################
# GROUP_PART_PUBLISH: non-members and duplicates in the list

sadd($GID, 1003);    # members now 1001 1002 1003 1004
my @list = (1002, 9999, 1002, 1003, 1001, 5555, 1003);
my $p4 = payload(1001, $GID, 'part');
my $id4 = $a->part_publish($GID, \@list, $p4, raw => 1);
$ack = $a->expect(cmd => GROUP_PART_PUB_ACK);
is(hex_of($ack && $ack->{raw}), hexdump(part_pub_ack($id4)),
    'GROUP_PART_PUB_ACK is exactly <<12, MsgId>>');

for my $r ([$b, 1002], [$c, 1003]) {
    my ($cl, $uid) = @$r;
    my $m = $cl->expect(cmd => GROUP_PART_PUBLISH);
    is(hex_of($m && $m->{raw}), hexdump(part_push_msg($GID, $id4, \@list, $p4)),
        "listed member $uid gets <<11, Gid, MsgId, N, Uids as sent, Len, Payload>>");
    $cl->ack($id4, cmd => GROUP_PART_PUB_ACK);
}
# duplicates: a second copy would arrive right after the first
ok($b->nothing_for(0.7), '1002, listed twice, receives once');
ok($c->nothing_for(0.1), '1003, listed twice, receives once');
ok($d->nothing_for(0.1), 'a member not listed (1004) gets nothing');
ok($a->nothing_for(0.1), 'the sender, though listed, gets nothing');

# empty result: nobody listed is a member -> <<10, 11, MsgId>>, no ack
my $id5 = $a->part_publish($GID, [9999, 5555], payload(1001, $GID, 'none'), raw => 1);
$m = $a->next;
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PART_PUBLISH, $id5)),
    'part-group with no member listed: <<10, 11, MsgId>>');
ok($a->nothing_for(0.3), '... no GROUP_PART_PUB_ACK');
ok(alive($a), '... session stays');

my $id5b = $a->part_publish($GID, [1001], payload(1001, $GID, 'me'), raw => 1);
$m = $a->next;
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PART_PUBLISH, $id5b)),
    'part-group listing only the sender: <<10, 11, MsgId>>');

my $id5c = $a->part_publish($GID, [], payload(1001, $GID, 'empty'), raw => 1);
$m = $a->next;
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PART_PUBLISH, $id5c)),
    'part-group with N = 0: <<10, 11, MsgId>>');
ok(alive($a), '... session stays');

# a non-member sender of a part-group message
srem($GID, 1004);
my $id6 = $d->part_publish($GID, [1002], payload(1004, $GID, 'x'), raw => 1);
$m = $d->next;
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PART_PUBLISH, $id6)),
    'part-group from a non-member: <<10, 11, MsgId>>');
ok(alive($d), '... session stays');
ok($b->nothing_for(0.3), '... nothing delivered');
sadd($GID, 1004);

###############################################################################
# offline members: pushed after login with the original Gid and format

$b->disconnect;
ok($b->wait_closed(3), '1002 leaves');
select undef, undef, undef, 0.3;

my $p7 = payload(1001, $GID, 'while away');
my $id7 = $a->group_publish($GID, $p7, raw => 1);
ok($a->expect(cmd => GROUP_PUB_ACK, msgid => $id7), 'group message acked, 1002 offline');
my $p8 = payload(1001, $GID, 'part while away');
my @list8 = (1002, 7777);
my $id8 = $a->part_publish($GID, \@list8, $p8, raw => 1);
ok($a->expect(cmd => GROUP_PART_PUB_ACK, msgid => $id8),
    'part-group message acked, its only member recipient offline');
for my $cl ($c, $d) {
    ok($cl->expect(cmd => GROUP_PUBLISH, msgid => $id7), 'online member ' . $cl->uid . ' receives');
    $cl->ack($id7, cmd => GROUP_PUB_ACK);
}

my $b2 = user(1002);
$m = $b2->next;
is(hex_of($m && $m->{raw}), hexdump(group_push_msg($GID, $id7, $p7)),
    'after login: the stored group push, original Gid, format <<5, ...>>');
$b2->ack($id7, cmd => GROUP_PUB_ACK) if $m;
$m = $b2->next;
is(hex_of($m && $m->{raw}), hexdump(part_push_msg($GID, $id8, \@list8, $p8)),
    'then the stored part-group push, format <<11, ...>> with the list as sent');
$b2->ack($id8, cmd => GROUP_PART_PUB_ACK) if $m;
ok($b2->nothing_for(0.5), 'the stored messages are pushed once');
$b = $b2;

###############################################################################
# any of the three acks acknowledges any push: cmd 5 acked with 4 / 6 / 12,
# cmd 11 acked with 4 / 6 / 12; an ack that did not count would leave the
# message stored, pushed again at the next login (as the unacked ones
# below are)

my $id10 = $a->group_publish($GID, payload(1001, $GID, 'ack kinds'), raw => 1);
$a->expect(cmd => GROUP_PUB_ACK, msgid => $id10);
my $id11 = $a->part_publish($GID, [1002, 1003, 1004], payload(1001, $GID, 'ack kinds part'), raw => 1);
$a->expect(cmd => GROUP_PART_PUB_ACK, msgid => $id11);
my %kinds = (1002 => [PUB_ACK, GROUP_PART_PUB_ACK], 1003 => [GROUP_PUB_ACK, PUB_ACK],
    1004 => [GROUP_PART_PUB_ACK, GROUP_PUB_ACK]);
for my $cl ($b, $c, $d) {
    my ($k5, $k11) = @{$kinds{$cl->uid}};
    my $g = $cl->expect(cmd => GROUP_PUBLISH, msgid => $id10);
    $cl->ack($id10, cmd => $k5) if $g;
    my $p = $cl->expect(cmd => GROUP_PART_PUBLISH, msgid => $id11);
    $cl->ack($id11, cmd => $k11) if $p;
    ok($g && $p, $cl->uid . " gets both (acks them with $k5 and $k11)");
}
# each of them leaves and comes back: nothing pending
for my $cl ($b, $c, $d) {
    $cl->disconnect;
    $cl->wait_closed(3);
}
select undef, undef, undef, 0.3;
($b, $c, $d) = map { user($_) } 1002, 1003, 1004;
for my $cl ($b, $c, $d) {
    my ($k5, $k11) = @{$kinds{$cl->uid}};
    my @again = grep { $_->{cmd} == GROUP_PUBLISH || $_->{cmd} == GROUP_PART_PUBLISH }
        $cl->drain($cl == $b ? 1 : 0.1);
    is(scalar @again, 0, $cl->uid . ": ack $k5 for cmd 5 and ack $k11 for cmd 11 count "
        . '(not redelivered at the next login)');
}

###############################################################################
# nginx again with other timers ($main), once these clients have closed

sub restart {
    my ($main, @clients) = @_;
    for my $cl (@clients) {
        $cl->close(1000);
        $cl->wait_closed(2);
    }
    $t->stop();
    write_conf($t, redis => $redis, uc => $uc, stream => 0, main => $main);
    $t->run();
}

###############################################################################
# re-pushes: nginx again with im_repush_interval 1s, im_repush_max 1

restart($REPUSH, $a, $b, $c, $d);
($a, $b, $c, $d) = map { user($_) } 1001 .. 1004;

# an unacked group push is pushed again (1003 and 1004 ack at once; 1002
# does not, and waits as long as the harness waits for anything)
my $id9 = $a->group_publish($GID, payload(1001, $GID, 'repush'), raw => 1);
$a->expect(cmd => GROUP_PUB_ACK, msgid => $id9);
$c->expect(cmd => GROUP_PUBLISH, msgid => $id9) && $c->ack($id9, cmd => PUB_ACK);
$d->expect(cmd => GROUP_PUBLISH, msgid => $id9) && $d->ack($id9, cmd => PUB_ACK);
$m = $b->expect(cmd => GROUP_PUBLISH, msgid => $id9);
ok($m, '1002 gets a push and does not ack it');
$m = $b->expect(cmd => GROUP_PUBLISH, msgid => $id9);
ok($m, '... it is pushed again');
$b->ack($id9, cmd => GROUP_PUB_ACK);
$b->drain(0.2);
$c->drain(0.2);
$d->drain(0.2);

# pushes never acked: the session is closed after the re-pushes and the
# messages stay stored, redelivered at the next login in their own format
my ($ig, $ip, $pg, $pp, @lp);
{
    $pg = payload(1001, $GID, 'never acked');
    $ig = $a->group_publish($GID, $pg, raw => 1);
    ok($a->expect(cmd => GROUP_PUB_ACK, msgid => $ig), 'group message acked to the sender');
    @lp = (1003, 1002);
    $pp = payload(1001, $GID, 'never acked part');
    $ip = $a->part_publish($GID, \@lp, $pp, raw => 1);
    ok($a->expect(cmd => GROUP_PART_PUB_ACK, msgid => $ip), 'part-group message acked to the sender');
    $b->expect(msgid => $ig) && $b->ack($ig, cmd => GROUP_PUB_ACK);
    $b->expect(msgid => $ip) && $b->ack($ip, cmd => GROUP_PART_PUB_ACK);
    $d->expect(msgid => $ig) && $d->ack($ig, cmd => GROUP_PUB_ACK);
    # 1003 reads but never acks: one re-push (im_repush_max 1), then closed;
    # the first one is certainly re-pushed before that (the second one too
    # unless it was sent an interval after the first)
    my %n;
    my $deadline = time + 2 + $Test::Nginx::TIMEOUT;
    while (time < $deadline && !$c->is_closed && !$c->ws->close_received) {
        $n{$_->{msgid} // ''}++ for $c->drain(0.2);
    }
    ok(($n{$ig} // 0) == 2 && ($n{$ip} // 0) >= 1,
        "1003 gets both pushes, the first one re-pushed once (${\ ($n{$ig} // 0)}"
        . " and ${\ ($n{$ip} // 0)} times), and does not ack");
    ok($c->wait_closed(), '1003: session closed after the re-pushes');
}

###############################################################################
# quiet again: the next login gets both, each acked once

restart($QUIET, $a, $b, $c, $d);
$a = user(1001);
$b = user(1002);
$d = user(1004);
{
    $c = user(1003);
    my $m1 = $c->next;
    is(hex_of($m1 && $m1->{raw}), hexdump(group_push_msg($GID, $ig, $pg)),
        'at the next login: the group push <<5, Gid, ...>> again');
    $c->ack($ig, cmd => GROUP_PUB_ACK) if $m1;
    my $m2 = $c->next;
    is(hex_of($m2 && $m2->{raw}), hexdump(part_push_msg($GID, $ip, \@lp, $pp)),
        'then the part-group push <<11, Gid, ..., list as sent>> again');
    $c->ack($ip, cmd => GROUP_PART_PUB_ACK) if $m2;
    $c->disconnect;
    $c->wait_closed(3);
    select undef, undef, undef, 0.3;
    $c = user(1003);
    ok($c->nothing_for(1), 'acked now: not redelivered at the login after');
}

# leave before the stop (a live session holds up nginx's graceful shutdown)
for my $cl ($a, $b, $c, $d) {
    $cl->close(1000);
    $cl->wait_closed(2);
}

$t->done_testing();
