#!/usr/bin/perl
# Events out: online, stored (for an offline uid), delivered, dropped; to a
# Redis stream (XADD, read back with XRANGE) and to a web hook (JSON
# batches POSTed through an nginx location to a receiver the test runs),
# the hook retried until it answers 2xx; a hook that is down costs events
# beyond its queue, counted, never messages.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use IM::Client;
use IM::Hook;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf/;
use IM::Redis;
use IM::UserCentre;
use JSON::PP ();

my $t = Test::Nginx->new()->has(qw/http/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => <<'U');
alice alice-secret 1001
bob bob-secret 1002
carol carol-secret 1003
U
my $hook = IM::Hook->new(t => $t);
my $hp = $hook->port;

write_conf($t, redis => $redis, uc => $uc, stream => 0,
    main => "im_events_stream im:events maxlen=1000;\n"
          . "im_events_hook http://127.0.0.1:%%PORT_9095%%/_events "
          . "batch=50 queue=15 timeout=5s;\n"
          . "im_offline_max 2;\nim_repush_interval 60s;\n"
          . "im_ping_interval 300s;",
    locations => "location = /_events { allow 127.0.0.1; deny all; "
               . "proxy_pass http://127.0.0.1:$hp/events; }");
$t->run();

sub stream_events {
    my $r = $redis->cmd(XRANGE => 'im:events', '-', '+') // [];
    return map {
        my %f = @{$_->[1]};
        JSON::PP::decode_json($f{event});
    } @$r;
}

sub find {
    my ($list, %want) = @_;
    for my $e (@$list) {
        return $e unless grep { ($e->{$_} // '') ne $want{$_} } keys %want;
    }
    return undef;
}

my $a = IM::Client->new(port => port(9095), auto_pong => 1);
is($a->login('alice', 'alice-secret', client_id => 3), 0, 'alice logs in');

# bob is offline: a stored event
my $id = $a->publish(1002, 'for later');
ok($a->expect(cmd => PUB_ACK, msgid => $id), 'accepted for offline bob');

my $b = IM::Client->new(port => port(9095), auto_pong => 1);
is($b->login('bob', 'bob-secret', client_id => 1), 0, 'bob logs in');
ok($b->expect(cmd => PUBLISH, msgid => $id), 'bob gets it');
$b->ack($id);

# a message to bob while he is online: no stored event for it
my $id2 = $a->publish(1002, 'live');
ok($a->expect(cmd => PUB_ACK, msgid => $id2), 'accepted for online bob');
ok($b->expect(cmd => PUBLISH, msgid => $id2), 'pushed live');
$b->ack($id2);

# carol's inbox holds 2: the third message trims one
for my $i (1 .. 3) {
    my $x = $a->publish(1003, "c$i");
    ok($a->expect(cmd => PUB_ACK, msgid => $x), "to carol $i");
}

# a "stored" event follows its message's PUBLISH, which leaves once the
# append is in (decision 037): a round trip after the inbox cap's "dropped"
sub carols { scalar grep { $_->{type} eq 'stored' && $_->{to} == 1003 } @_ }

my @s;
ok(wait_until(sub {
    @s = stream_events();
    find(\@s, type => 'delivered', msgid => $id2)
        && find(\@s, type => 'dropped', reason => 'inbox_cap')
        && carols(@s) >= 3;
}, 30), 'the stream has the events') or diag explain \@s;

my $on = find(\@s, type => 'online', uid => 1001);
ok($on && $on->{client_id} == 3 && $on->{transport} eq 'ws'
    && $on->{addr} eq '127.0.0.1' && defined $on->{role}
    && $on->{time} > 1.7e12 && defined $on->{node} && $on->{worker} > 0,
    'online: uid, ClientId, role, address, transport, time, node, worker')
    or diag explain $on;
my $st = find(\@s, type => 'stored', msgid => $id);
ok($st && $st->{from} == 1001 && $st->{to} == 1002 && $st->{gid} == 0
    && $st->{size} > 0 && $st->{msgid_hex} eq unpack('H*', $id),
    'stored: MsgId, sender, recipient, gid, size') or diag explain $st;
ok(!find(\@s, type => 'stored', msgid => $id2),
    'no stored event for a message to an online uid');
my $dl = find(\@s, type => 'delivered', msgid => $id);
ok($dl && $dl->{uid} == 1002 && $dl->{client_id} == 1
    && $dl->{after_ms} >= 0, 'delivered: uid, ClientId, time since accepted')
    or diag explain $dl;
my $dr = find(\@s, type => 'dropped', reason => 'inbox_cap');
ok($dr && $dr->{uid} == 1003 && $dr->{count} == 1,
    'dropped: the inbox cap, for carol, one message') or diag explain $dr;
is(carols(@s), 3, 'three stored events for offline carol');

# the hook got the same events, in batches
my @h;
ok(wait_until(sub {
    @h = $hook->events;
    find(\@h, type => 'delivered', msgid => $id2)
        && find(\@h, type => 'dropped', reason => 'inbox_cap')
        && carols(@h) >= 3;
}, 30), 'the hook got the events') or diag explain \@h;
is(scalar(@h), scalar(@s), 'the hook and the stream have as many events');

# the hook fails twice: the batch is sent again until it is taken
$hook->fail(500, 2);
my $mark = $t->log_mark;
$b->close(1000);
$b->wait_closed;
my $c = IM::Client->new(port => port(9095), auto_pong => 1);
is($c->login('carol', 'carol-secret'), 0, 'carol logs in');
ok(wait_until(sub { find([$hook->events], type => 'online', uid => 1003) },
    30), 'the online event arrives once the hook answers 200 again');
ok($t->wait_for_log(qr/im events: the hook answered 500; \d+ events are tried again/,
    from => $mark), 'the failures are logged');

# the hook receiver gone: events beyond the queue (15) are dropped and
# counted; messages go on
$hook->stop;
for my $i (1 .. 30) {
    my $x = $a->publish(1003, "burst $i");
    ok($a->expect(cmd => PUB_ACK, msgid => $x), "message $i still acked")
        or last;
    my $m = $c->expect(cmd => PUBLISH, msgid => $x);
    $c->ack($x) if $m;
}
my $metrics = http_get('/metrics', port => port(9095)) // '';
my ($hd) = $metrics =~ /^im_events_dropped_total\{output="hook"\} (\d+)$/m;
ok($hd && $hd > 0, "hook events over the queue are dropped and counted ($hd)");
my ($sd) = $metrics =~ /^im_events_dropped_total\{output="stream"\} (\d+)$/m;
is($sd, 0, 'the stream lost none');
like($metrics, qr/^im_events_total\{output="stream"\} [1-9]\d*$/m,
    'the stream\'s events are counted');

$t->done_testing();
