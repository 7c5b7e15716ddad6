#!/usr/bin/perl
# Write-through group messages keep their guarantees
# (docs/decisions/038-group-write-through.md): a group of 1,104 members,
# most of them offline; every offline member's inbox holds the message
# once, with a TTL; an inbox at im_offline_max is trimmed and the drop
# counted; an offline member gets 1:1, group, 1:1 at login in the order
# they were accepted; a member that acks leaves an empty inbox, one that
# does not gets the message again at its next login, and a second device
# logging in right after five acks is pushed none of them.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/standard/;
use IM::WS;

# no re-push within the test: "gets it again" is seen at the next login
my ($t, $redis) = standard(stream => 0,
    users => "* * uid-from-name\n",
    main => "im_repush_interval 60s;\nim_repush_max 1;\n"
          . "im_offline_max 4;\nim_ping_interval 300s;");

my $GID = 300;
my @far = map { 20000 + $_ } 0 .. 1099;     # offline members
$redis->select_cmd(1, 'SADD', "im_group:$GID", 1001 .. 1004, @far);

sub user {
    my ($uid) = @_;
    my $c = IM::Client->new(port => port(9095), auto_pong => 1,
        uid => $uid);
    is($c->login("u$uid", 'pw'), 0, "u$uid logs in");
    return $c;
}

# a full inbox: four entries before the message (their bytes do not
# matter, the trim keeps the newest four)
$redis->cmd(RPUSH => 'im:inbox:20001', 'old1', 'old2', 'old3', 'old4');

my $a = user(1001);
my $b = user(1002);
my $c = user(1003);

sub one_to_one {
    my ($to, $text) = @_;
    my $id = $a->publish($to, $text);
    ok($a->expect(cmd => PUB_ACK, msgid => $id, timeout => 20),
        "'$text' to $to accepted");
    return $id;
}

my $x1 = one_to_one(1004, 'before the group message');
my $g1 = $a->group_publish($GID, 'to the group');
ok($a->expect(cmd => GROUP_PUB_ACK, msgid => $g1, timeout => 30),
    'the group message is accepted (stored for 1,103 members)');
my $x2 = one_to_one(1004, 'after the group message');

# every offline member holds it once, with a TTL
my ($bad, $nottl) = (0, 0);
for my $uid (@far) {
    next if $uid == 20001;
    my $l = $redis->cmd(LRANGE => "im:inbox:$uid", 0, -1);
    $bad++ unless @$l == 1 && index($l->[0], $g1) > 0;
    $nottl++ unless ($redis->cmd(TTL => "im:inbox:$uid") // -2) > 0;
}
is($bad, 0, 'each of 1,099 offline inboxes holds the message once');
is($nottl, 0, '... and expires');

my $full = $redis->cmd(LRANGE => 'im:inbox:20001', 0, -1);
is(scalar @$full, 4, 'a full inbox is trimmed to im_offline_max');
ok(@$full == 4 && index($full->[3], $g1) > 0 && $full->[0] eq 'old2',
    '... its oldest entry dropped, the message last');
my $r = http_get('/metrics', port => port(9095)) // '';
like($r, qr/^im_dropped_total\{reason="inbox_cap"\} 1$/m,
    'the drop is counted');

# the online members get it; one acks, the other does not
my $mb = $b->expect(cmd => GROUP_PUBLISH, msgid => $g1, timeout => 20);
ok($mb, '1002 gets it');
my $mc = $c->expect(cmd => GROUP_PUBLISH, msgid => $g1, timeout => 20);
ok($mc, '1003 gets it');
$b->ack($g1, cmd => GROUP_PUB_ACK);
ok(wait_until(sub { ($redis->cmd(LLEN => 'im:inbox:1002') // -1) == 0 },
        10), "1002's ack empties its inbox");
is($redis->cmd(LLEN => 'im:inbox:1003'), 1, "1003's inbox keeps it");

# the offline member: 1:1, group, 1:1 in the order they were accepted
my $d = user(1004);
my @got;
for (1 .. 3) {
    my $m = $d->next(timeout => 20) or last;
    push @got, $m->{msgid};
}
is_deeply(\@got, [$x1, $g1, $x2], '1004 at login: 1:1, group, 1:1');
$d->ack($x1);
$d->ack($g1, cmd => GROUP_PUB_ACK);
$d->ack($x2);
ok(wait_until(sub { ($redis->cmd(LLEN => 'im:inbox:1004') // -1) == 0 },
        10), "1004's acks empty its inbox");

# 1003 did not ack: it gets the message again at its next login
$c->close(1000);
$c->wait_closed(10);
$c = user(1003);
my $again = $c->expect(cmd => GROUP_PUBLISH, timeout => 20);
is($again && $again->{msgid}, $g1, '1003 gets it again at its next login');
$c->ack($g1, cmd => GROUP_PUB_ACK);
ok(wait_until(sub { ($redis->cmd(LLEN => 'im:inbox:1003') // -1) == 0 },
        10), '... and its ack empties its inbox');

# five messages to 1002, acked in one write, and 1002 logs in on a second
# device at once: the removals go before the second device's inbox read
my @ids = map { one_to_one(1002, "burst $_") } 1 .. 5;
for my $id (@ids) {
    ok($b->expect(cmd => PUBLISH, msgid => $id, timeout => 20),
        '1002 gets a burst message');
}
my $b2 = IM::Client->new(port => port(9095), auto_pong => 1, uid => 1002);
$b2->ws;
$b->ws->send_raw(join '', map {
    IM::WS::build_frame(payload => ack_msg(PUB_ACK, $_)) } @ids);
is($b2->login('u1002', 'pw'), 0, 'u1002 logs in on a second device');
ok($b2->nothing_for(1), 'it is pushed none of what the first one acked');
ok(wait_until(sub { ($redis->cmd(LLEN => 'im:inbox:1002') // -1) == 0 },
        10), 'five acks in one write empty the inbox');
my @late = $b->drain(0.2);
ok(!grep({ $_->{cmd} == PUBLISH } @late), "and nothing is pushed again")
    or diag(join " ", map { $_->{cmd} } @late);

$t->done_testing();
