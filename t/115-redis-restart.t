#!/usr/bin/perl
# Redis stopped and started again during traffic (issue 3 item 5), senders
# on ws and wss: while Redis is down a PUBLISH to an offline recipient gets
# the refusal <<10, 3, MsgId>>, never a PUB_ACK, and one to the recipient
# online on this worker is delivered without Redis and acked once that
# recipient acked it (decision 037); sessions stay up (PING answered,
# nobody closed); after Redis is back the module reconnects by itself and
# publishing works again; nothing acked before, during or after is lost
# (online recipient and offline recipient).
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
use IM::Setup qw/write_conf transport/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");
write_conf($t, redis => $redis, uc => $uc);
$t->run();

my %ws = transport('ws');
my %wss = transport('wss');
my ($X, $Y) = (14001, 14002);    # X offline, Y online (wss)

my $sw = IM::Client->new(%ws, auto_pong => 1);
my $ss = IM::Client->new(%wss, auto_pong => 1);
my $y = IM::Client->new(%wss, auto_pong => 1, auto_ack => 1);
is($sw->login('s14010', 'pw'), 0, 'ws sender logs in');
is($ss->login('s14011', 'pw'), 0, 'wss sender logs in');
is($y->login("u$Y", 'pw'), 0, 'online recipient logs in (wss)');

my (%acked, %refused, @order, %got_y);
my @senders = (['ws', $sw], ['wss', $ss]);

# the answer to $id from $c, reading the online recipient meanwhile (it
# acks, and a message delivered without Redis is acked after it)
sub answer {
    my ($c, $id, $timeout) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my $m = $c->expect(msgid => $id, timeout => 0.02);
        return $m if $m;
        $got_y{$_->{msgid}}++ for grep { $_->{cmd} == PUBLISH }
            $y->drain(0.01);
    }
    return undef;
}

# publish one message from each sender to X and to Y; wait for the replies
sub round {
    my ($tag, $timeout) = @_;
    my @out;
    for my $sd (@senders) {
        my ($sn, $c) = @$sd;
        for my $to ($X, $Y) {
            my $id = $c->publish($to, "$tag/$sn/$to");
            push @out, [$c, $id, $to, "$tag/$sn/$to"];
        }
    }
    my %res;
    for my $o (@out) {
        my ($c, $id, $to, $text) = @$o;
        my $deadline = time + ($timeout // 5);
        while (my $m = answer($c, $id, $deadline - time)) {
            if ($m->{cmd} == PUB_ACK) {
                $acked{$id} = [$to, $text];
                push @order, $id;
                $res{ack}++;
                $res{"ack$to"}++;
            } elsif ($m->{cmd} == INVALID_PACKET) {
                $refused{$id} = $m->{raw};
                $res{refused}++;
                $res{"refused$to"}++;
                $res{exact}++ if $m->{raw} eq invalid_packet(PUBLISH, $id);
            } else {
                next;
            }
            last;
        }
    }
    $got_y{$_->{msgid}}++ for grep { $_->{cmd} == PUBLISH } $y->drain(0.05);
    return \%res;
}

# -- before
for my $k (1 .. 5) {
    my $r = round("before$k");
    is($r->{ack}, 4, "before: round $k all 4 acked");
}

# -- Redis down
$redis->stop;
ok(1, 'redis stopped');
my ($nref, $nack, $nexact, $n, $nrefy, $nackx) = (0, 0, 0, 0, 0, 0);
my $t0 = time;
for my $k (1 .. 5) {
    my $r = round("down$k", 6);
    $nref += $r->{refused} // 0;
    $nack += $r->{ack} // 0;
    $nexact += $r->{exact} // 0;
    $nrefy += $r->{"refused$Y"} // 0;
    $nackx += $r->{"ack$X"} // 0;
    $n += 4;
    sleep 0.2;
}
is($nackx, 0, "while Redis is down: no PUB_ACK for the offline recipient");
is($nref, $n / 2, "while Redis is down: every publish to it refused");
is($nexact, $nref, 'the refusals are exactly <<10, 3, MsgId>>');
is($nrefy, 0, 'the online recipient on this worker: none refused');
is($nack, $n / 2, 'its messages acked, delivered without Redis');
ok(time - $t0 < 20, sprintf('refusals come in bounded time (%.1fs for %d)', time - $t0, $n));
ok(!$sw->is_closed && !$ss->is_closed && !$y->is_closed, 'sessions stay up');
$sw->ping;
ok($sw->expect(cmd => PING_RESP), 'a session answers PING while Redis is down');

# -- Redis back: publishing works again by itself
$redis->start;
ok(1, 'redis started again');
my $back;
my $deadline = time + 15;
while (time < $deadline) {
    # to the offline recipient: the online one has its messages acked
    # without Redis too
    my $id = $sw->publish($X, 'probe/ws/');
    my $m = answer($sw, $id, 3);
    if ($m && $m->{cmd} == PUB_ACK) {
        $acked{$id} = [$X, 'probe/ws/'];
        $back = time;
        last;
    }
    sleep 0.3;
}
ok($back, 'after the restart a publish is acked again' . ($back ? '' : ' (not within 15s)'));
for my $k (1 .. 5) {
    my $r = round("after$k");
    is($r->{ack}, 4, "after: round $k all 4 acked");
}
ok(!$sw->is_closed && !$ss->is_closed && !$y->is_closed, 'sessions still up');

# -- Redis stopped in the middle of a burst: every publish gets one answer,
# an ack or a refusal
{
    my @burst;
    for my $k (1 .. 120) {
        my ($sn, $c) = @{$senders[$k % 2]};
        my $to = $k % 3 ? $X : $Y;
        push @burst, [$c, $c->publish($to, "burst/$sn/$k"), $to, "burst/$sn/$k"];
        $redis->stop if $k == 40;
    }
    my ($a, $r, $none, $bad) = (0, 0, 0, 0);
    for my $b (@burst) {
        my ($c, $id, $to, $text) = @$b;
        my $m = answer($c, $id, 6);
        if (!$m) { $none++ }
        elsif ($m->{cmd} == PUB_ACK) { $a++; $acked{$id} = [$to, $text]; push @order, $id }
        elsif ($m->{raw} eq invalid_packet(PUBLISH, $id)) { $r++ }
        else { $bad++ }
    }
    note("burst: $a acked, $r refused");
    is($none + $bad, 0, "burst with Redis stopped after 40: every publish answered by an ack or <<10,3,MsgId>> ($a acked, $r refused)");
    ok($r > 0, 'burst: the ones after the stop are refused');
    $redis->start;
    my $ok;
    my $deadline = time + 15;
    while (time < $deadline) {
        my $id = $ss->publish($X, 'probe2/wss/');
        my $m = answer($ss, $id, 3);
        if ($m && $m->{cmd} == PUB_ACK) { $acked{$id} = [$X, 'probe2/wss/']; push @order, $id; $ok = 1; last }
        sleep 0.3;
    }
    ok($ok, 'burst: publishing works again after the second restart');
    ok(!$sw->is_closed && !$ss->is_closed && !$y->is_closed, 'burst: sessions still up');
}

# -- nothing acked is lost
my @for_y = grep { $acked{$_}[0] == $Y } @order;
my $deadline2 = time + 6;
while (time < $deadline2 && grep { !$got_y{$_} } @for_y) {
    $got_y{$_->{msgid}}++ for grep { $_->{cmd} == PUBLISH } $y->drain(0.2);
}
is(join(' ', map { $acked{$_}[1] } grep { !$got_y{$_} } @for_y), '',
    'the online recipient got every message acked for it (' . scalar(@for_y) . ')');

my $x = IM::Client->new(%ws, auto_pong => 1, auto_ack => 1);
is($x->login("u$X", 'pw'), 0, 'offline recipient logs in');
my @for_x = grep { $acked{$_}[0] == $X } @order;
my @px;
$deadline2 = time + 6;
while (keys(%{{ map { $_ => 1 } @px }}) < @for_x and my $m = $x->next(timeout => $deadline2 - time)) {
    push @px, $m->{msgid} if $m->{cmd} == PUBLISH;
}
push @px, map { $_->{msgid} } grep { $_->{cmd} == PUBLISH } $x->drain(0.5);
my %px = map { $_ => 1 } @px;
is(join(' ', map { $acked{$_}[1] } grep { !$px{$_} } @for_x), '',
    'the offline recipient got every message acked for it (' . scalar(@for_x) . ')');
# order is defined per sender (two connections race each other)
for my $sn (qw/ws wss/) {
    my %seen;
    my @want = grep { $acked{$_}[1] =~ m{/$sn/} } @for_x;
    my %w = map { $_ => 1 } @want;
    is(join(' ', grep { $w{$_} && !$seen{$_}++ } @px), join(' ', @want),
        "... in the order acked, for the $sn sender's " . scalar(@want) . ' messages');
}

$_->close(1000) for $sw, $ss, $y, $x;
# close the sockets now, not in global destruction (IM::WS::Conn::DESTROY
# then trips over a half-destroyed IO::Socket::SSL)
$_->ws->disconnect for $sw, $ss, $y, $x;
$t->done_testing();
