#!/usr/bin/perl

# "error_log ... debug" tells one session's story: its states, its close
# phases, its uid's subscription, the alone decision for the uid and the
# Redis connections, in the order they happened. Bob logs in, gets one
# message from alice (whose first send to bob probes the channel and marks
# bob alone, so the second skips it), acks both, and leaves with
# DISCONNECT. The story is read back from the log: the lines of bob's
# connection (by its "*N" number) and those naming his uid.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until/;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/standard status/;

# re-push far away: nothing in the story depends on how fast bob acks
my ($t, $redis, $uc) = standard(stream => 0,
    main => 'im_repush_interval 60s;');

ok($t->wait_for_log(qr/im redis: connection 0 ready/),
   'the inbox connection came up');

my $a = IM::Client->new(port => port(9095), auto_pong => 1);
is($a->login('alice', 'alice-secret'), 0, 'alice logs in');
my $b = IM::Client->new(port => port(9095), auto_pong => 1);
is($b->login('bob', 'bob-secret'), 0, 'bob logs in');

# the hold after bob's subscription is over, and his inbox read (behind
# its mark) merged, before alice sends
ok($t->wait_for_log(qr/im sync: uid 1002: the read merged/),
   'bob is settled');

for my $text ('one', 'two') {
    my $id = $a->publish(1002, $text);
    ok($a->expect(cmd => PUB_ACK, msgid => $id), "alice's '$text' acked");
    my $m = $b->expect(cmd => PUBLISH);
    ok($m && $m->{msgid} eq $id, "bob gets '$text'");
    $b->ack($id);
}

$b->send(disconnect_msg());
$b->ws->wait_closed;
wait_until(sub { (status()->{users} // -1) == 1 });
ok($t->wait_for_log(qr/im router: uid 1002 forgotten/),
   "bob's uid is forgotten");

my $log = $t->error_log;

my ($conn) = $log =~ /\*(\d+) im: uid 1002 client \d+ logged in/;
ok($conn, "bob's connection number is in the log") or BAIL_OUT('no login');

# bob's story: his connection's lines and those naming his uid
my @story = grep {
    /\*$conn im / || /im [a-z]+: uid 1002\b/
} split /\n/, $log;

my @chapters = (
    qr/\*$conn im session: created, token \d+, state connect/,
    qr/\*$conn im session: uid 0 state connect -> auth/,
    qr/\*$conn im session: user centre answered 0, uid 1002/,
    qr/\*$conn im session: uid 1002 state auth -> live/,
    qr/\*$conn im router: uid 1002 joined, sessions 1 sub 0/,
    qr/im router: uid 1002 subscribing/,
    qr/im router: uid 1002 subscribed/,
    qr/im alone: uid 1002 announced, hold \d+/,
    qr/im alone: uid 1002 hold over, 0 of 0 answers/,
    qr/\*$conn im sync: uid 1002 load under way 0/,
    qr/\*$conn im inbox: uid 1002, 0 entries/,
    qr/\*$conn im sync: uid 1002: the read merged/,
    qr/\*$conn im push: uid 1002 state 2 loading 0 phase 0/,
    qr/im alone: uid 1002 alone, channel skipped/,
    qr/\*$conn im delivery: uid 1002 acked a push/,
    qr/\*$conn im delivery: uid 1002 acked a push/,
    qr/\*$conn im session: uid 1002 close phase none -> posted, reason 5/,
    qr/\*$conn im session: uid 1002 close phase posted -> flushing/,
    qr/\*$conn im router: uid 1002 left, sessions 0/,
    qr/im router: uid 1002 unsubscribing/,
    qr/\*$conn im session: uid 1002 state live -> closing/,
    qr/\*$conn im session: uid 1002 finalized, reason 5/,
);

# each chapter after the one before it
my $at = 0;
for my $re (@chapters) {
    my $found;
    for my $i ($at .. $#story) {
        if ($story[$i] =~ $re) {
            $found = $i;
            last;
        }
    }
    ok(defined $found, "story: $re") or do {
        diag("after line $at of:\n" . join("\n", @story));
        last;
    };
    $at = $found + 1;
}

# the subscription's end, whenever Redis confirms it
like(join("\n", @story),
     qr/uid 1002 unsubscribing.*uid 1002 unsubscribed.*uid 1002 forgotten/s,
     'unsubscribing, unsubscribed, forgotten');

# the Redis connections' own story
for my $c ([0, 'inbox'], [2, 'pub/sub']) {
    like($log, qr/im\ redis:\ connection\ $c->[0]\ connecting\ to
                  \ 127\.0\.0\.1:\d+ .* im\ redis:\ connection\ $c->[0]
                  \ ready/sx,
         "the $c->[1] connection: connecting, then ready");
}

$t->done_testing();
