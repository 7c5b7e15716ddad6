#!/usr/bin/perl
# Owed group messages (docs/decisions/052-group-owe-records.md) and a
# second device of the member on another node: two nodes on one Redis,
# one worker each. A member on node a holds an owed group message
# unacked (no inbox append); its second device logs in on node b and reads
# the inbox on a's answer to its announcement, which a gives only after
# appending what its session owes: the device on b is pushed the message.
# A later ack on a removes it from the inbox.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
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
);

my $t0 = Test::Nginx->new()->has(qw/http redis/);    # holds the helpers
my $redis = IM::Redis->new(t => $t0);
my $uc = IM::UserCentre->new(t => $t0, users => "* * uid-from-name\n");

my $a = IM::Cluster::node(name => 'a', port => 9095, workers => 1,
    redis => $redis, uc => $uc, status => 1, timers => \%TIMERS);
my $b = IM::Cluster::node(name => 'b', port => 9096, workers => 1,
    redis => $redis, uc => $uc, status => 1, timers => \%TIMERS);
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
    my $l = $redis->cmd(LRANGE => "im:inbox:$uid", 0, -1) // [];
    my @got;
    for my $e (@$l) {
        my ($id) = grep { index($e, $_) >= 0 } @ids;
        push @got, $id // '?';
    }
    return "@got";
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

$a->stop();
$b->stop();
$t0->done_testing();
