#!/usr/bin/perl
# im_offline_max (docs/PROTOCOL.md 5): with a cap of 3, 5 messages stored for
# an offline uid leave the newest 3; the oldest 2 are dropped, counted
# (offline_dropped in /status) and logged. Other uids are unaffected.
# im_offline_ttl (8s here) is the life of each stored message, not of the
# inbox: one stored over 9.2s before the login is gone, one stored into the
# same inbox 5s after it (while the inbox key lives) is delivered (the store
# keeps expiry times in whole seconds: +-1s).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port http_get/;
use Time::HiRes qw/time sleep/;
use JSON::PP;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transports each_transport/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");
write_conf($t, redis => $redis, uc => $uc, main => "im_offline_max 3;\nim_offline_ttl 8s;");
$t->run();

# the first $n pushes (each within the harness's bound), then whatever else
# comes within $extra seconds
sub pushes {
    my ($c, $n, $extra) = @_;
    my @p;
    while (@p < $n and my $m = $c->next) {
        push @p, $m if $m->{cmd} == PUBLISH;
    }
    push @p, grep { $_->{cmd} == PUBLISH } $c->drain($extra);
    return @p;
}

sub status {
    my $r = http_get('/status', port => port(9095)) // '';
    my ($body) = $r =~ /\r\n\r\n(.*)\z/s;
    return eval { decode_json($body // '') } // {};
}

my $base = 7000;
each_transport(sub {
    my ($name, $i, %o) = @_;
    $base += 100 * ($i + 1);
    my ($r, $q) = ($base + 1, $base + 2);

    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login("s$base", 'pw'), 0, "$name: sender logs in");
    my $dropped0 = status()->{offline_dropped} // 0;
    my $mark = $t->log_mark;

    my @ids;
    for my $i (1 .. 5) {
        push @ids, $s->publish($r, "m$i");
        ok($s->expect(cmd => PUB_ACK, msgid => $ids[-1]), "$name: m$i acked to the sender");
    }
    # another offline uid with 3: at the cap, nothing dropped
    for my $i (1 .. 3) {
        my $id = $s->publish($q, "q$i");
        $s->expect(cmd => PUB_ACK, msgid => $id);
    }

    my $c = IM::Client->new(%o, auto_pong => 1, auto_ack => 1);
    is($c->login("u$r", 'pw'), 0, "$name: recipient logs in");
    my @p = pushes($c, 3, 0.5);
    is(join(' ', map { $_->{text} // '?' } @p), 'm3 m4 m5',
        "$name: cap 3: the newest 3 delivered in order, the oldest 2 dropped");
    is(join(' ', map { $_->{msgid} } @p), join(' ', @ids[2 .. 4]), "$name: ... with their MsgIds");

    my $d = $c;
    my $cq = IM::Client->new(%o, auto_pong => 1, auto_ack => 1);
    is($cq->login("u$q", 'pw'), 0, "$name: the other recipient logs in");
    @p = pushes($cq, 3, 0.5);
    is(join(' ', map { $_->{text} // '?' } @p), 'q1 q2 q3', "$name: exactly at the cap: all 3 kept");

    is((status()->{offline_dropped} // 0) - $dropped0, 2, "$name: offline_dropped counts 2 more");
    ok($t->wait_for_log(qr/\[(?:warn|notice|info|error)\][^\n]*(?:drop|oldest)/i, from => $mark),
        "$name: the drop is logged (warn/notice/info/error)");
    $_->close(1000) for $c, $cq, $s;
}, serial => 1);    # offline_dropped is one counter for both

# -- TTL, per message
{
    my %o = IM::Setup::transport('ws');
    my $z = 7900;
    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login('s7999', 'pw'), 0, 'ttl: sender logs in');
    # the ages are bounded from this side: the old one was stored before
    # its PUB_ACK was read, so at the login it is over 9.2s old (> 8s + 1s);
    # the new one is stored after it is sent, 5s after that PUB_ACK, so it
    # is 4.2s old plus what a login takes (< 8s - 1s). The inbox key (TTL
    # 9s, given again by the second append) lives throughout.
    my $old = $s->publish($z, 'old');
    ok($s->expect(cmd => PUB_ACK, msgid => $old), 'ttl: the old one acked');
    my $t0 = time;
    my $w = $t0 + 5 - time;
    sleep $w if $w > 0;
    my $new = $s->publish($z, 'new');
    ok($s->expect(cmd => PUB_ACK, msgid => $new), 'ttl: the new one acked 5s later');
    $w = $t0 + 9.2 - time;
    sleep $w if $w > 0;
    my $c = IM::Client->new(%o, auto_pong => 1, auto_ack => 1);
    is($c->login("u$z", 'pw'), 0, 'ttl: recipient logs in 9.2s after the first');
    my @p = pushes($c, 1, 0.5);
    is(join(' ', map { $_->{text} // '?' } @p), 'new',
        'ttl: the message older than im_offline_ttl expired, the younger one is delivered');
    $_->close(1000) for $c, $s;
}

$t->done_testing();
