#!/usr/bin/perl
# Node-wide counters: after a known amount of traffic every scrape of
# /metrics (Prometheus text) and /status (JSON) gives the exact counts,
# whichever of the two workers answers. reuseport spreads the scrapes'
# connections over both workers.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use IM::Client;
use IM::TCP;
use IM::Proto qw/:all/;
use IM::Setup qw/standard ssl_opts/;
use JSON::PP ();

my ($t, $redis, $uc) = standard(
    workers => 2, listen => 'reuseport',
    main => "im_zone im 1m;\nim_repush_interval 60s;\n"
          . "im_ping_interval 300s;");
$t->allow_alerts(qr/exited on signal 9/,
    qr/shared memory zone "(im|ngx_im_metrics)" was locked by/);

sub scrape {
    my $r = http_get('/metrics', port => port(9095)) // '';
    my ($head, $body) = split /\r\n\r\n/, $r, 2;
    return ($head // '', $body // '');
}

# { 'name{labels}' => value } of a Prometheus text body
sub parse {
    my ($body) = @_;
    my %m;
    for (split /\n/, $body) {
        next if /^#/ || !/\S/;
        my ($k, $v) = /^(\S+) (\S+)$/ or return;
        $m{$k} = $v;
    }
    return \%m;
}

my $a = IM::Client->new(port => port(9095), auto_pong => 1);
is($a->login('alice', 'alice-secret'), 0, 'alice logs in over ws');
my $b = IM::Client->new(port => port(8443), path => '/wss', ssl => 1,
    ssl_opts => ssl_opts(), auto_pong => 1);
is($b->login('bob', 'bob-secret'), 0, 'bob logs in over wss');
my $bad = IM::Client->new(port => port(9095));
is($bad->login('alice', 'wrong'), 3, 'a wrong password is denied');
$bad->close(1000);
$bad->wait_closed;

my $api = IM::TCP->new(port => port(19095));

for my $i (1 .. 5) {
    my $id = $a->publish(1002, "m$i");
    ok($a->expect(cmd => PUB_ACK, msgid => $id), "alice's message $i acked");
    my $m = $b->expect(cmd => PUBLISH);
    ok($m && $m->{msgid} eq $id, "bob gets message $i");
    $b->ack($id);
}
for my $i (1 .. 3) {
    my $id = msgid();
    $api->send_msg(publish_msg(1002, $id, "api$i"));
    my $r = $api->recv_decoded(10);
    ok($r && $r->{cmd} == PUB_ACK, "API message $i acked");
    my $m = $b->expect(cmd => PUBLISH);
    ok($m && $m->{msgid} eq $id, "bob gets API message $i");
    $b->ack($id);
}

my %want = (
    'im_sessions{transport="ws"}' => 1,
    'im_sessions{transport="wss"}' => 1,
    'im_sessions{transport="tcp"}' => 1,
    'im_sessions_opened_total{transport="ws"}' => 2,
    'im_sessions_opened_total{transport="wss"}' => 1,
    'im_logins_total{result="accepted"}' => 2,
    'im_logins_total{result="denied"}' => 1,
    'im_logins_total{result="duplicate"}' => 0,
    'im_logins_total{result="unavailable"}' => 0,
    'im_auth_duration_seconds_count' => 3,
    'im_auth_duration_seconds_bucket{le="+Inf"}' => 3,
    'im_messages_in_total{cmd="connect"}' => 3,
    'im_messages_in_total{cmd="publish"}' => 8,
    'im_messages_in_total{cmd="pub_ack"}' => 8,
    'im_messages_out_total{cmd="connect_ack"}' => 3,
    'im_messages_out_total{cmd="publish"}' => 8,
    'im_messages_out_total{cmd="pub_ack"}' => 8,
    'im_accepted_total' => 8,
    'im_refused_total{reason="invalid"}' => 0,
    'im_pushes_total' => 8,
    'im_repushes_total' => 0,
    'im_acks_total' => 8,
    'im_stored_total' => 8,
    'im_workers' => 2,
);

# the acks' inbox removals and the bad client's close settle first
my $last;
ok(wait_until(sub {
    my (undef, $body) = scrape();
    $last = parse($body) or return 0;
    return !grep { ($last->{$_} // -1) != $want{$_} } keys %want;
}, 30), 'the counts settle') or diag explain { map {
    $_ => $last->{$_} } grep { ($last->{$_} // -1) != $want{$_} } keys %want };

my (%pids, $bad_scrapes, $bad_json);
for my $n (1 .. 40) {
    my ($head, $body) = scrape();
    my $m = parse($body);
    $bad_scrapes++ unless $head =~ m{Content-Type: text/plain; version=0\.0\.4}i
        && $m && !grep { ($m->{$_} // -1) != $want{$_} } keys %want;
    my $js = http_get('/status', port => port(9095)) // '';
    my ($jb) = $js =~ /\r\n\r\n(.*)\z/s;
    my $st = eval { JSON::PP::decode_json($jb // '') } // {};
    $pids{$st->{pid} // 0}++;
    $bad_json++ unless ($st->{sessions} // -1) == 3
        && ($st->{logins} // -1) == 2 && ($st->{login_failures} // -1) == 1
        && ($st->{accepted} // -1) == 8 && ($st->{acked} // -1) == 8
        && ($st->{messages_in}{publish} // -1) == 8
        && @{$st->{workers} // []} == 2;
    last if $n >= 10 && keys %pids >= 2;
}
ok(!$bad_scrapes, 'every Prometheus scrape gives the exact counts');
ok(!$bad_json, 'every /status gives the same node-wide counts');
is(scalar(grep { $_ } keys %pids), 2, 'both workers answered');

# the format: HELP and TYPE before each family, histograms cumulative
my (undef, $body) = scrape();
my (%type, $ok_format);
$ok_format = 1;
for (split /\n/, $body) {
    if (/^# TYPE (\S+) (counter|gauge|histogram)$/) { $type{$1} = $2; next }
    next if /^# HELP \S+ \S/;
    my ($name) = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/
        or do { $ok_format = 0; next };
    (my $fam = $name) =~ s/_(bucket|sum|count)$// unless $type{$name};
    $fam //= $name;
    $ok_format = 0 unless $type{$name} || $type{$fam};
}
ok($ok_format, 'every sample belongs to a family with a TYPE');
my $m = parse($body);
my @b = map { $m->{qq{im_redis_duration_seconds_bucket{le="$_"}}} }
    qw/0.0001 0.001 0.01 0.1 1 +Inf/;
ok(!grep({ !defined } @b) && $b[0] <= $b[1] && $b[1] <= $b[2]
    && $b[2] <= $b[3] && $b[3] <= $b[4] && $b[4] <= $b[5]
    && $b[5] == $m->{im_redis_duration_seconds_count},
    'the Redis latency histogram is cumulative and counts every reply');
# the harness's own probe of the TCP port is a session too
ok($m->{'im_sessions_opened_total{transport="tcp"}'} >= 1,
    'TCP API sessions are counted');
ok($m->{im_redis_commands_total} >= 8, 'Redis commands are counted');
my $ws = 0;
$ws += $m->{$_} for grep { /^im_worker_sessions\{/ } keys %$m;
is($ws, 3, 'the per-worker session gauges add up to the node\'s');

# a reload keeps the counters: the zone is the same memory
$t->reload();
ok(wait_until(sub {
    my $st = parse((scrape())[1]) or return 0;
    return ($st->{'im_accepted_total'} // 0) == 8
        && ($st->{'im_logins_total{result="accepted"}'} // 0) == 2;
}, 30), 'counters survive a reload');

# a worker killed: its counts stay in the node's, its gauges go
my ($victim) = (scrape())[1] =~ /^im_worker_sessions\{worker="\d+",pid="(\d+)"\}/m;
ok($victim && kill('KILL', $victim), 'a worker is killed');
my $after;
ok(wait_until(sub {
    $after = parse((scrape())[1]) or return 0;
    return ($after->{im_workers} // 0) == 2
        && !grep { /pid="$victim"/ } keys %$after;
}, 30), 'the respawned worker counts, the dead one is gone');
is($after->{im_accepted_total}, 8, 'the dead worker\'s counts are kept');
is($after->{'im_logins_total{result="accepted"}'}, 2,
    'its logins too');

$t->done_testing();
