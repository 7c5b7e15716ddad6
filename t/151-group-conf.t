#!/usr/bin/perl
# Groups under non-default directives (docs/PROTOCOL.md §3.4; issue 5 item 3):
# im_part_push_as_group on -> GROUP_PART_PUBLISH is pushed as a plain group
# push <<5, Gid, MsgId, Len, Payload>> (online and from the offline store), the
# sender still gets <<12, MsgId>>, an empty result is still <<10, 11, MsgId>>;
# im_group_db / im_group_prefix -> membership read from that db and key only;
# junk set members ignored, a key of the wrong type refused, a group larger
# than one SSCAN step (3,003 members), a member online from two devices gets
# the push on both.
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

my $t = Test::Nginx->new()->has(qw/http redis openssl/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");

# quiet re-push (60 s): "nothing more" checks must not see re-pushes of
# acks a loaded machine delivered late; whether an ack counted is checked
# at the next login (an unacked message comes again then)
write_conf($t, redis => $redis, uc => $uc, stream => 0, main => <<'M');
im_part_push_as_group on;
im_group_db 3;
im_group_prefix grp:;
im_repush_interval 60s;
M
$t->run();

my $JSON = JSON::PP->new->utf8->canonical;
my $GID = 4242;

sub user {
    my ($uid) = @_;
    my $c = IM::Client->new(port => port(9095), auto_pong => 1, uid => $uid);
    is($c->login("u$uid", 'pw'), 0, "u$uid logs in");
    return $c;
}

sub payload {
    my ($from, $to, $text) = @_;
    return $JSON->encode({ from => $from, to => $to,
        content => { type => 'text', text => $text } });
}

sub hex_of { defined $_[0] ? hexdump($_[0]) : 'undef' }

# the configured place, and a decoy at the default place
$redis->select_cmd(3, 'SADD', "grp:$GID", 2001, 2002, 2003);
$redis->select_cmd(1, 'SADD', "im_group:$GID", 2001, 2004);
$redis->select_cmd(3, 'SADD', "im_group:$GID", 2004);

my $a = user(2001);
my $b = user(2002);
my $c = user(2003);
my $d = user(2004);

###############################################################################
# im_group_db 3, im_group_prefix grp:

my $p1 = payload(2001, $GID, 'configured db and prefix');
my $id1 = $a->group_publish($GID, $p1, raw => 1);
ok($a->expect(cmd => GROUP_PUB_ACK, msgid => $id1), 'group message acked');
for my $cl ($b, $c) {
    my $m = $cl->expect(cmd => GROUP_PUBLISH, msgid => $id1);
    ok($m, 'member ' . $cl->uid . ' of grp:4242 in db 3 receives');
    $cl->ack($id1, cmd => GROUP_PUB_ACK) if $m;
}
ok($d->nothing_for(0.5), '2004 (only in db 1 / under im_group: in db 3) does not');

# 2004 is a member under the default name only: refused
my $id2 = $d->group_publish($GID, payload(2004, $GID, 'decoy'), raw => 1);
my $m = $d->next;
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PUBLISH, $id2)),
    'a sender that is a member only at the default place is refused');

###############################################################################
# im_part_push_as_group on

my @list = (2002, 2003, 2002, 9999);
my $p3 = payload(2001, $GID, 'part as group');
my $id3 = $a->part_publish($GID, \@list, $p3, raw => 1);
$m = $a->expect(cmd => GROUP_PART_PUB_ACK);
is(hex_of($m && $m->{raw}), hexdump(part_pub_ack($id3)),
    'sender still gets GROUP_PART_PUB_ACK <<12, MsgId>>');
for my $cl ($b, $c) {
    $m = $cl->next;
    is(hex_of($m && $m->{raw}), hexdump(group_push_msg($GID, $id3, $p3)),
        'listed member ' . $cl->uid . ' gets it as <<5, Gid, MsgId, Len, Payload>>');
    # the field's client answers a cmd 5 push with 6
    $cl->ack($id3, cmd => GROUP_PUB_ACK) if $m;
}
ok($b->nothing_for(0.5), 'received once (duplicate listed; the 6 ack is checked at the next login)');
ok($c->nothing_for(0.1), '2003 also nothing more');
ok($a->nothing_for(0.1) && $d->nothing_for(0.1), 'sender and non-listed get nothing');

# empty result is still a refusal with the original cmd
my $id4 = $a->part_publish($GID, [9999], payload(2001, $GID, 'none'), raw => 1);
$m = $a->next;
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PART_PUBLISH, $id4)),
    'empty part-group result: <<10, 11, MsgId>>');

# offline member: the stored push is cmd 5 too
$c->close(1000);
$c->wait_closed(2);
select undef, undef, undef, 0.3;
my $p5 = payload(2001, $GID, 'part as group, offline');
my $id5 = $a->part_publish($GID, [2003], $p5, raw => 1);
ok($a->expect(cmd => GROUP_PART_PUB_ACK, msgid => $id5), 'acked with 2003 offline');
$c = user(2003);
$m = $c->next;
is(hex_of($m && $m->{raw}), hexdump(group_push_msg($GID, $id5, $p5)),
    'after login: the stored message as <<5, Gid, MsgId, Len, Payload>>');
$c->ack($id5, cmd => GROUP_PUB_ACK) if $m;
ok($c->nothing_for(0.5), 'once (the 6 ack is checked at the next login)');

###############################################################################
# membership edge cases: junk members, a key of the wrong type, a member
# online from two devices

my $G2 = 4343;
$redis->select_cmd(3, 'SADD', "grp:$G2", 2001, 2002, 'abc', '0', '-5',
    '4294967296', ' 2003', '2004x', '');
my $p6 = payload(2001, $G2, 'junk around');
my $id6 = $a->group_publish($G2, $p6, raw => 1);
ok($a->expect(cmd => GROUP_PUB_ACK, msgid => $id6), 'junk set members: acked');
$m = $b->expect(msgid => $id6);
is(hex_of($m && $m->{raw}), hexdump(group_push_msg($G2, $id6, $p6)),
    'junk set members: the valid member receives');
$b->ack($id6, cmd => GROUP_PUB_ACK) if $m;
ok($c->nothing_for(0.3) && $d->nothing_for(0.1),
    "' 2003' and '2004x' are not 2003 and 2004");
ok($a->nothing_for(0.1), 'junk: sender gets nothing more');

$redis->select_cmd(3, 'SET', "grp:4444", '2001');
my $id7 = $a->group_publish(4444, payload(2001, 4444, 'wrong type'), raw => 1);
$m = $a->next;
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PUBLISH, $id7)),
    'group key of the wrong type (WRONGTYPE): <<10, 5, MsgId>>');
$a->ping;
ok($a->expect(cmd => PING_RESP), '... session stays');

# a group larger than one SSCAN step (the membership is read in steps):
# 3,000 offline members around the online ones; each online member once,
# the sender found wherever it is, a non-member still refused
my $G3 = 5000;
$redis->select_cmd(3, 'SADD', "grp:$G3", 500000 .. 502999);
$redis->select_cmd(3, 'SADD', "grp:$G3", 2001, 2002, 2003);
my $p9 = payload(2001, $G3, 'big group');
my $id9 = $a->group_publish($G3, $p9, raw => 1);
ok($a->expect(cmd => GROUP_PUB_ACK, msgid => $id9, timeout => 10),
    'group of 3,003 members: acked');
for my $cl ($b, $c) {
    $m = $cl->expect(msgid => $id9, timeout => 10);
    is(hex_of($m && $m->{raw}), hexdump(group_push_msg($G3, $id9, $p9)),
        'group of 3,003 members: ' . $cl->uid . ' gets it');
    $cl->ack($id9, cmd => GROUP_PUB_ACK) if $m;
}
ok($b->nothing_for(0.5) && $c->nothing_for(0.1), '... once');
ok($a->nothing_for(0.1) && $d->nothing_for(0.1), '... not the sender, not 2004');
my $id10 = $d->group_publish($G3, payload(2004, $G3, 'outsider'), raw => 1);
$m = $d->next(timeout => 10);
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PUBLISH, $id10)),
    'group of 3,003 members: a non-member refused');
my @l11 = (502999, 2003, 500000, 2004, 2003);
my $id11 = $a->part_publish($G3, \@l11, $p9, raw => 1);
ok($a->expect(cmd => GROUP_PART_PUB_ACK, msgid => $id11, timeout => 10),
    'group of 3,003 members: part-group acked');
$m = $c->expect(msgid => $id11, timeout => 10);
is(hex_of($m && $m->{raw}), hexdump(group_push_msg($G3, $id11, $p9)),
    'group of 3,003 members: part-group to 2003 (as cmd 5)');
$c->ack($id11, cmd => GROUP_PUB_ACK) if $m;
ok($c->nothing_for(0.5) && $b->nothing_for(0.1) && $d->nothing_for(0.1),
    '... once, and only to the listed member online');
for my $u (500000, 502999) {
    my $o = user($u);
    my @got = map { $o->next } 1 .. 2;
    is(join(' | ', map { hex_of($_ && $_->{raw}) } @got),
        join(' | ', map { hexdump($_) } group_push_msg($G3, $id9, $p9),
            group_push_msg($G3, $id11, $p9)),
        "offline member $u of the big group gets both at login");
    $o->ack($_->{msgid}, cmd => GROUP_PUB_ACK) for grep { $_ } @got;
    ok($o->nothing_for(0.3), "$u: nothing more");
    $o->close(1000);
    $o->wait_closed(2);
}

# 2002 from a second device: both sessions get the push, one ack is enough
my $b2 = IM::Client->new(port => port(9095), auto_pong => 1, uid => 2002);
is($b2->login('u2002', 'pw', role => 2, client_id => 2), 0, 'u2002 logs in from a second device');
my $p8 = payload(2001, $GID, 'two devices');
my $id8 = $a->group_publish($GID, $p8, raw => 1);
ok($a->expect(cmd => GROUP_PUB_ACK, msgid => $id8), 'acked');
my $m1 = $b->expect(msgid => $id8);
my $m2 = $b2->expect(msgid => $id8);
is(hex_of($m1 && $m1->{raw}), hexdump(group_push_msg($GID, $id8, $p8)),
    '2002 first device (client 0) gets the group push');
is(hex_of($m2 && $m2->{raw}), hexdump(group_push_msg($GID, $id8, $p8)),
    '2002 second device (client 2) gets the group push');
$b2->ack($id8, cmd => GROUP_PUB_ACK);
$c->expect(msgid => $id8) && $c->ack($id8, cmd => GROUP_PUB_ACK);
$b->close(1000);
$b->wait_closed(2);
$c->close(1000);
$c->wait_closed(2);
select undef, undef, undef, 0.3;
$b = user(2002);
ok($b->nothing_for(1), 'acked by the other device: not redelivered to the first '
    . '(nor anything 2002 acked with 6)');
$c = user(2003);
ok($c->nothing_for(1), '2003 acked everything (with 6): nothing redelivered');

for my $cl ($a, $b, $b2, $c, $d) {
    $cl->close(1000);
    $cl->wait_closed(2);
}

$t->done_testing();
