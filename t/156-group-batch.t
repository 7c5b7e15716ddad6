#!/usr/bin/perl
# Write-through appends of group messages go to Redis in batches
# (docs/decisions/048-group-appends-in-batches.md): the plain appends of
# the group messages of a pass (members alone on this worker: no PUBLISH,
# no transaction) wait for the batch under way and leave sorted by uid,
# and any other append or transaction sends them first. No uid's order
# may change: a sender's group and 1:1 messages written at once reach an
# online member, and its inbox, in the order they were sent; a burst of
# group messages alone, in a second write, reaches every member and its
# inbox in order, behind the first.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/standard/;
use IM::WS;

# no re-push and no ping within the test: the inboxes keep what was pushed.
# The batches are the appends of members online here only when they are
# not owed instead (decision 052; t/157 tests the records)
my ($t, $redis) = standard(stream => 0,
    users => "* * uid-from-name\n",
    main => "im_repush_interval 60s;\nim_ping_interval 300s;\n"
        . "im_group_owe off;");

# every member online here: an offline one needs the channel (another
# node may hold it), and its part of the group a transaction
my $GID = 400;
my @on = 1002 .. 1011;
# the sender is a member too: only members may write to a group
$redis->select_cmd(1, 'SADD', "im_group:$GID", 1001, @on);

sub user {
    my ($uid) = @_;
    my $c = IM::Client->new(port => port(9095), auto_pong => 1,
        uid => $uid);
    is($c->login("u$uid", 'pw'), 0, "u$uid logs in");
    return $c;
}

my $a = user(1001);
my %member = map { $_ => user($_) } @on;

sub skipped {
    my $r = http_get('/metrics', port => port(9095)) // '';
    return $r =~ /^im_channel_skipped_total (\d+)$/m ? $1 : -1;
}

# a first group message and a 1:1 message: their PUBLISHes tell that
# every member is alone here, so what follows skips the channel
my $w1 = $a->group_publish($GID, 'first');
ok($a->expect(cmd => GROUP_PUB_ACK, msgid => $w1, timeout => 20),
    'a first group message accepted');
my $w2 = $a->publish(1002, 'first 1:1');
ok($a->expect(cmd => PUB_ACK, msgid => $w2, timeout => 20),
    'a first 1:1 message accepted');
for my $uid (@on) {
    my @want = ($w1, $uid == 1002 ? ($w2) : ());
    my @got;
    while (@got < @want) {
        my $m = $member{$uid}->next(timeout => 20) or last;
        push @got, $m->{msgid};
    }
    is("@got", "@want", "u$uid is pushed the first ones");
    $member{$uid}->ack($w1, cmd => GROUP_PUB_ACK);
    $member{$uid}->ack($w2) if $uid == 1002;
}
ok(wait_until(sub { !grep { ($redis->cmd(LLEN => "im:inbox:$_") // -1) }
        @on }, 10), 'their acks empty the inboxes');
my $skipped = skipped();

my $N = 20;
my (@first, @second, @group, @to1002, @answers);

# the first write: g1 d1 g2 d2 ... (d: a 1:1 message to 1002)
for my $i (1 .. $N) {
    my $g = msgid();
    my $d = msgid();
    push @first, IM::WS::build_frame(payload =>
        group_publish_msg($GID, $g, $a->_payload($GID, "g$i")));
    push @first, IM::WS::build_frame(payload =>
        publish_msg(1002, $d, $a->_payload(1002, "d$i")));
    push @group, $g;
    push @to1002, $g, $d;
    push @answers, [GROUP_PUB_ACK, $g], [PUB_ACK, $d];
}

# the second: group messages alone, h1 ... hN
for my $i (1 .. $N) {
    my $h = msgid();
    push @second, IM::WS::build_frame(payload =>
        group_publish_msg($GID, $h, $a->_payload($GID, "h$i")));
    push @group, $h;
    push @to1002, $h;
    push @answers, [GROUP_PUB_ACK, $h];
}

$a->ws->send_raw(join '', @first);
$a->ws->send_raw(join '', @second);

my $accepted = 0;
for my $want (@answers) {
    my $m = $a->next(timeout => 30) or last;
    unless ($m->{cmd} == $want->[0] && $m->{msgid} eq $want->[1]) {
        diag("answer $accepted: cmd $m->{cmd}, wanted $want->[0]");
        last;
    }
    $accepted++;
}
is($accepted, scalar @answers, 'every message accepted, in request order');

# what each online member is pushed, in order
sub pushed {
    my ($c, $n) = @_;
    my @got;
    while (@got < $n) {
        my $m = $c->next(timeout => 30) or last;
        push @got, $m->{msgid}
            if $m->{cmd} == PUBLISH || $m->{cmd} == GROUP_PUBLISH;
    }
    return \@got;
}

is_deeply(pushed($member{1002}, scalar @to1002), \@to1002,
    '1002 is pushed the group and 1:1 messages in the order sent');

my $bad = 0;
for my $uid (@on[1 .. $#on]) {
    my $got = pushed($member{$uid}, scalar @group);
    $bad++ unless "@$got" eq "@group";
}
is($bad, 0, 'every other online member is pushed the group messages in '
    . 'order');

# the inboxes: the msgids their entries hold, in list order
sub inbox {
    my ($uid) = @_;
    return [$redis->inbox_ids($uid, @to1002)];
}

is_deeply(inbox(1002), \@to1002, "1002's inbox holds them in that order");

$bad = 0;
for my $uid (@on[1 .. $#on]) {
    my $got = inbox($uid);
    $bad++ unless "@$got" eq "@group";
}
is($bad, 0, "every other member's inbox holds the group messages in "
    . 'order');

# the plain appends were taken: the channel skipped for every recipient
is(skipped() - $skipped, 2 * $N * @on + $N, 'no PUBLISH went with them');

$t->done_testing();
