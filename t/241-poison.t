#!/usr/bin/perl
# Poison messages: a stored message whose push ends im_poison_after sessions
# without an ack (the re-push limit) leaves the inbox for im:dead:<uid>, is
# logged and counted, and is no longer pushed; everything else arrives.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/standard/;

# short re-push timers so that a session ends quickly; nothing below
# depends on how quickly
my ($t, $redis) = standard(stream => 0,
    main => "im_repush_interval 300ms;\nim_repush_max 1;\n"
          . "im_poison_after 2;\nim_close_grace 1s;\n"
          . "im_ping_interval 300s;");

my $a = IM::Client->new(port => port(9095), auto_pong => 1);
is($a->login('alice', 'alice-secret'), 0, 'alice logs in');

sub send_to_bob {
    my ($text) = @_;
    my $id = $a->publish(1002, $text);
    ok($a->expect(cmd => PUB_ACK, msgid => $id, timeout => 20),
        "'$text' accepted");
    return $id;
}

# bob's client: acks everything but $poison; returns the MsgIds pushed
# (in order, repeats left out) once the server ends the session
sub session_until_closed {
    my ($poison, $n) = @_;
    my $b = IM::Client->new(port => port(9095), auto_pong => 1);
    is($b->login('bob', 'bob-secret'), 0, "bob logs in ($n)");
    my (@got, %seen);
    my $deadline = time + 60;
    while (time < $deadline) {
        my $m = $b->next(timeout => 5);
        last if !$m && ($b->ws->close_received || $b->is_closed);
        next unless $m;
        if ($m->{cmd} == LOGOUT) { next }
        next unless $m->{cmd} == PUBLISH;
        push @got, $m->{msgid} unless $seen{$m->{msgid}}++;
        $b->ack($m->{msgid}) unless $m->{msgid} eq $poison;
    }
    ok($b->ws->close_received || $b->is_closed,
        "the server ended bob's session $n");
    $b->close(1000);
    $b->wait_closed(10);
    return @got;
}

my $p = send_to_bob('poison');
my $g1 = send_to_bob('good 1');

my @s1 = session_until_closed($p, 1);
is_deeply(\@s1, [$p, $g1], 'session 1: both pushed, in order');

my $g2 = send_to_bob('good 2 while bob is away');
my @s2 = session_until_closed($p, 2);
is_deeply(\@s2, [$p, $g2],
    'session 2: the poison message again, then what came meanwhile');

ok($t->wait_for_log(qr/uid 1002: message [0-9a-f]{64} ended 2 sessions without an ack: moved to im:dead:1002/),
    'the move is logged with the MsgId');

my $dead = $redis->cmd(LRANGE => 'im:dead:1002', 0, -1);
is(scalar @$dead, 1, 'one dead letter');
ok(@$dead && index($dead->[0], $p) > 0, 'it is the poison message');
ok($redis->cmd(TTL => 'im:dead:1002') > 0, 'the dead letters expire');
my $inbox = $redis->cmd(LRANGE => 'im:inbox:1002', 0, -1);
ok(!grep({ index($_, $p) > 0 } @$inbox), 'it left the inbox');

# session 3: the first push is a new message, not the poison one
my $b = IM::Client->new(port => port(9095), auto_pong => 1);
is($b->login('bob', 'bob-secret'), 0, 'bob logs in (3)');
my $g3 = send_to_bob('good 3');
my $m = $b->expect(cmd => PUBLISH, timeout => 20);
is($m && $m->{msgid}, $g3, 'session 3: the poison message is not pushed');
$b->ack($g3);
ok($b->nothing_for(1.5), 'and the session stays');
ok(!$b->is_closed, 'bob stays logged in');

my $r = http_get('/metrics', port => port(9095)) // '';
like($r, qr/^im_dropped_total\{reason="poison"\} 1$/m, 'counted');

$t->done_testing();
