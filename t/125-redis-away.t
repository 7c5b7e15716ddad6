#!/usr/bin/perl
# While Redis is away (issue 16 item 7; docs/decisions/037): a write-through
# message refused with <<10, 3, MsgId>> reached nobody, one to a recipient
# online on the sender's node is delivered without Redis and acked once the
# recipient acked it, and an acked one reaches its recipient.  Two nodes
# (a, b: two workers each, im_zone) on one Redis that holds enough filler to
# take seconds to load (key-load-delay): senders on a keep publishing 1:1 to
# recipients on a's two workers (the sender's own worker and its sibling)
# and on b, while Redis is stopped and started again, down and then loading
# its data.  Counted:
#
#   - every publish is answered, by PUB_ACK or exactly <<10, 3, MsgId>>;
#   - refusals happen while Redis is down and while it loads, to the
#     recipients on b only; those on a get theirs without Redis
#     (im_direct_total), and none of these is refused;
#   - pushes of refused messages at their recipients: 0, per kind of
#     recipient (same worker, sibling worker, other node), but for those
#     whose append Redis ran just before the connection broke (the AOF
#     tells): they are in the inbox and delivered from it;
#   - acked messages that never reach their recipient: 0;
#   - node a's error log: the cause is logged once per change per worker
#     (down, LOADING), then "works again" with the count, and these counts
#     add up to the refusals and the deliveries without Redis; no line per
#     failed append.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Cluster qw/login status/;

my %TIMERS = (
    # no check here is about pings or re-pushes: quiet ones on a busy
    # machine (a re-push would be a duplicate of an acked message, which
    # is allowed, but it would blur the figures)
    im_ping_interval   => '300s',
    im_ping_timeout    => '5s',
    im_repush_interval => '60s',
    im_repush_max      => '3',
    im_close_grace     => '1s',
);

sub node {
    my (%o) = @_;
    return IM::Cluster::node(%o, timers => \%TIMERS, status => 1);
}

my $FILLER = 20000;     # keys Redis loads after its restart
my $DELAY = 200;        # microseconds per key: about 4 s of LOADING

my $t0 = Test::Nginx->new()->has(qw/http redis/);
my $redis = IM::Redis->new(t => $t0, args => [
    '--key-load-delay', $DELAY,
    # answer (LOADING) while loading, not only between 2 MB of data
    '--loading-process-events-interval-bytes', 1024,
    '--enable-debug-command', 'yes',
]);
my $uc = IM::UserCentre->new(t => $t0, users => "* * uid-from-name\n");

# the filler in the AOF's base file (an RDB, loaded key by key)
$redis->cmd('DEBUG', 'POPULATE', $FILLER, 'im:filler');
$redis->cmd('BGREWRITEAOF');
ok(wait_until(sub {
    my $i = $redis->cmd('INFO', 'persistence');
    return $i =~ /aof_rewrite_in_progress:0/
        && $i =~ /aof_rewrite_scheduled:0/
        && $i =~ /aof_last_bgrewrite_status:ok/;
}, 30), "Redis holds $FILLER filler keys in its AOF base");

my $a = node(name => 'a', port => 9095, redis => $redis, uc => $uc);
my $b = node(name => 'b', port => 9096, redis => $redis, uc => $uc);
$a->run();
$b->run();

# senders on a; recipients on both workers of a, and on b
my (@senders, @rcpts, %pid, %node);
for my $u (7001 .. 7003) {
    my ($c, $code, $p) = login($a, $u, auto_ack => 1);
    is($code, 0, "sender u$u logs in on a");
    push @senders, $c;
    $pid{$u} = $p;
}
{
    my %w;
    for my $u (7101 .. 7130) {
        my ($c, $code, $p) = login($a, $u, auto_ack => 1);
        is($code, 0, "recipient u$u logs in on a");
        push @rcpts, $c;
        ($pid{$u}, $node{$u}) = ($p, 'a');
        $w{$p // '?'} = 1;
        last if @rcpts >= 4 && keys %w >= 2;
    }
    is(scalar(keys %w), 2, 'recipients on both workers of a');
}
for my $u (7201 .. 7202) {
    my ($c, $code, $p) = login($b, $u, auto_ack => 1);
    is($code, 0, "recipient u$u logs in on b");
    push @rcpts, $c;
    ($pid{$u}, $node{$u}) = ($p, 'b');
}

# the kind of a sender -> recipient pair
sub kind {
    my ($s, $r) = @_;
    return 'other node' if $node{$r} eq 'b';
    return ($pid{$s} // 0) == ($pid{$r} // -1) ? 'same worker' : 'sibling';
}

###############################################################################
# traffic: each sender keeps up to $WINDOW publishes unanswered, to the
# recipients in turn

my $WINDOW = 8;
my (%sent, %answer, %got, %open);    # by MsgId
my $turn = 0;
my $mark = $a->log_mark;

sub poll {
    my ($sending) = @_;
    for my $s (@senders) {
        my $su = $s->uid;
        while ($sending && ($open{$su} // 0) < $WINDOW) {
            my $r = $rcpts[$turn++ % @rcpts];
            my $id = $s->publish($r->uid, "away/$su/$turn");
            $sent{$id} = [$su, $r->uid, time];
            $open{$su}++;
        }
        for my $m ($s->drain(0.002)) {
            next unless defined $m->{msgid} && $sent{$m->{msgid}}
                && $sent{$m->{msgid}}[0] == $su;
            if ($m->{cmd} == PUB_ACK) {
                $answer{$m->{msgid}} //= 'ack';
            } elsif ($m->{raw} eq invalid_packet(PUBLISH, $m->{msgid})) {
                $answer{$m->{msgid}} //= 'refused';
            } else {
                $answer{$m->{msgid}} //= 'other';
            }
            $open{$su}--;
        }
    }
    for my $r (@rcpts) {
        for my $m ($r->drain(0.002)) {
            $got{$m->{msgid}}++ if $m->{cmd} == PUBLISH;
        }
    }
}

sub count {
    my ($what) = @_;
    return scalar grep { $_ eq $what } values %answer;
}

sub run_for {
    my ($seconds, $until) = @_;
    my $end = time + $seconds;
    while (time < $end) {
        poll(1);
        last if $until && $until->();
    }
}

# before: all acked
run_for(1);
my $before = count('ack');
ok($before > 0 && count('refused') == 0,
    "before: $before acked, none refused");

# Redis down
$redis->stop;
my $acks_then = count('ack');
run_for(30, sub { count('refused') >= 50 });
run_for(1);
my $down = count('refused');
ok($down > 0, "while Redis is down: $down refused");

# Redis started again: it loads its data for seconds
$redis->start(loading => 1);
my $loading = eval { $redis->cmd('EXISTS', 'im:filler:0') } ? 0 : 1;
ok($loading || $@ =~ /LOADING/, 'Redis is loading after its start')
    or diag("EXISTS: $@");

my $refused_before_back = count('refused');
my $acks_before_back = count('ack');
run_for(60, sub {
    eval { $redis->cmd('EXISTS', 'im:filler:0') } && 1;
});
ok(eval { $redis->cmd('EXISTS', 'im:filler:0') }, 'Redis has loaded');

# a while more once publishes are acked again
run_for(60, sub { count('ack') > $acks_before_back + 100 });
ok(count('ack') > $acks_before_back, 'acked again after the restart');
run_for(1);

# every publish answered
my $deadline = time + 30;
poll(0) while time < $deadline && grep { $_ > 0 } values %open;
my @unanswered = grep { !$answer{$_} } keys %sent;
is(scalar @unanswered, 0, sprintf('every publish answered (%d sent)',
    scalar keys %sent));
is(count('other'), 0, 'answers are PUB_ACK or exactly <<10, 3, MsgId>>');

my @acked = grep { $answer{$_} eq 'ack' } keys %sent;
my @refused = grep { $answer{$_} eq 'refused' } keys %sent;
ok(@refused > $down, sprintf('refused while loading too (%d after the '
    . 'restart)', @refused - $refused_before_back));

# without Redis: the recipients on a had theirs, acked after their ack
my $st = status(port(9095));
my ($direct, $direct_refused) = ($st->{direct} // 0,
    $st->{direct_refused} // 0);
ok($direct > 0, "node a delivered $direct messages without Redis");
is($direct_refused, 0, 'none of them refused (every recipient acked)');

# every acked message reaches its recipient
$deadline = time + 30;
while (time < $deadline && grep { !$got{$_} } @acked) {
    poll(0);
}
my @lost = grep { !$got{$_} } @acked;
is(scalar @lost, 0, sprintf('acked messages lost: 0 of %d', scalar @acked));

# a last look for late pushes (no wait is needed for the count below: a
# refused message is never pushed at all)
poll(0) for 1 .. 20;

# A refusal for a lost connection cannot know whether Redis ran the
# append just before it went: such a message may be in the inbox, and is
# then delivered from it (a duplicate of the sender's resend, told by
# MsgId; docs/GUIDE.md 3).  The AOF tells which ones Redis ran.
my $aof = '';
for my $f (glob($redis->dir . '/appendonlydir/*.aof')) {
    open my $fh, '<:raw', $f or die "$f: $!\n";
    local $/;
    $aof .= <$fh>;
}
ok(length $aof, 'the AOF is read');

my (%refused_by, %pushed_by, @ran);
for my $id (@refused) {
    if (index($aof, $id) >= 0) {
        push @ran, $id;
        next;
    }
    my $k = kind(@{$sent{$id}}[0, 1]);
    $refused_by{$k}++;
    $pushed_by{$k} += $got{$id} // 0;
}
note(sprintf('%d refused messages were appended all the same (the '
    . 'connection went before the reply), %d of them pushed from the inbox',
    scalar @ran, scalar grep { $got{$_} } @ran));
ok(@ran <= 3 * $WINDOW, 'few refusals are of appends Redis ran: ' . @ran);
ok(($refused_by{'other node'} // 0) > 0,
    'refusals to a recipient on the other node: '
    . ($refused_by{'other node'} // 0));
for my $k ('same worker', 'sibling') {
    is($refused_by{$k} // 0, 0, "refusals to a recipient on the $k: 0 "
        . '(delivered without Redis)');
}
for my $k ('same worker', 'sibling', 'other node') {
    is($pushed_by{$k} // 0, 0,
        "refused messages pushed to a recipient on the $k: 0");
}
my $dups = grep { ($got{$_} // 0) > 1 } @acked;
note(sprintf('%d sent, %d acked, %d refused, %d acked ones arrived twice',
    scalar keys %sent, scalar @acked, scalar @refused, $dups));

# node a's log: the cause once per change per worker, the counts add up
my @lines = grep { /im store: / } split /\n/, $a->error_log($mark);
my @fail = grep { /im store: Redis commands fail: / } @lines;
my @back = grep { /im store: Redis works again after / } @lines;
note($_) for @fail, @back;
ok(scalar(grep { /fail: connection down/ } @fail) >= 1,
    'a line says the connection is down');
ok(scalar(grep { /fail: LOADING/ } @fail) >= 1,
    'a line says Redis is loading');
ok(@fail <= 2 * 4, sprintf('at most 4 "fail" lines per worker: %d, for '
    . '%d refusals', scalar @fail, scalar @refused));
ok(@back >= 1 && @back <= 2 * 3, sprintf('"works again" lines: %d',
    scalar @back));
is(scalar(grep { /append failed/ } @lines), 0, 'no line per append');

# the counts: a "fail" line gives those of the cause before it, a "works
# again" line those of the cause that ended
my $n = 0;
for (@lines) {
    $n += $1 if /\(before: [^,]*, (\d+) appends/;
    $n += $1 if /works again after [^:]*: (\d+) appends/;
}
is($n, @refused + $direct, "the logged counts add up to the refusals and "
    . "the deliveries without Redis ($n)");

$_->close for @senders, @rcpts;
$a->stop();
$b->stop();
$t0->done_testing();
