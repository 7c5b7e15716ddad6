#!/usr/bin/perl
# A group of 1,000 members, all online (issue 5 item 5, scaled to a test):
# 1,000 WebSocket sessions from this one process over 2 workers, one group
# message from a member reaches the 999 others exactly (bytes checked),
# each within the harness's bound (how fast is for the benchmarks, not for
# this test); a part-group message listing 500 of them reaches those 500
# only. IM_GROUP_N overrides the size.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use Time::HiRes qw/time/;

my $N = $ENV{IM_GROUP_N} // 1000;

my $t = Test::Nginx->new()->has(qw/http redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");

$t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
daemon on;
worker_processes 2;
worker_rlimit_nofile 8192;
im_redis ${\ $redis->addr};
# quiet re-push: the members are read one after another (seconds under
# load) and acked as read; a re-push of one read late would be a second
# copy in "nobody got it twice" and "members not listed got nothing"
im_repush_interval 60s;
# quiet pings: a member is read once per pass over the 1,000 (tens of
# seconds on a loaded machine) and cannot answer a PING in between
im_ping_interval 300s;
events { worker_connections 4096; }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_9095%% reuseport backlog=4096;
        location /ws { im_websocket; im_auth /_auth; }
        ${\ $uc->auth_location }
    }
}
EOF
$t->run();

my $GID = 777;
my @U = map { 100000 + $_ } 1 .. $N;
$redis->select_cmd(1, 'SADD', "im_group:$GID", @U);

my %cl;
my $t0 = time;
my $ok = 0;
for my $i (0 .. int(($N - 1) / 100)) {
    my @batch = grep { defined } @U[$i * 100 .. $i * 100 + 99];
    for my $u (@batch) {
        $cl{$u} = IM::Client->new(port => port(9095), auto_pong => 1, uid => $u);
        $cl{$u}->send(connect_msg("u$u", 'pw'));
    }
    for my $u (@batch) {
        my $m = $cl{$u}->expect(cmd => CONNECT_ACK, timeout => 10);
        $ok++ if $m && $m->{code} == 0;
    }
}
is($ok, $N, "$N members online");
diag(sprintf "logins: %.1fs", time - $t0);

# the uids of @$who that did not get exactly $push as message $id; the
# others ack it with $cmd
sub missing {
    my ($who, $id, $push, $cmd) = @_;
    my @miss;
    for my $u (@$who) {
        my $m = $cl{$u}->expect(msgid => $id, timeout => 10);
        if ($m && $m->{raw} eq $push) {
            $cl{$u}->ack($id, cmd => $cmd);
        } else {
            push @miss, $u;
        }
    }
    return @miss;
}

my $sender = $U[0];
my $payload = '{"from":' . $sender . ',"to":' . $GID
    . ',"content":{"type":"text","text":"to all"}}';

$t0 = time;
my $id = $cl{$sender}->group_publish($GID, $payload, raw => 1);
my $ack = $cl{$sender}->expect(cmd => GROUP_PUB_ACK, msgid => $id, timeout => 20);
ok($ack, 'sender gets GROUP_PUB_ACK');
my $t_ack = time - $t0;
my $push = group_push_msg($GID, $id, $payload);
my @missing = missing([@U[1 .. $#U]], $id, $push, GROUP_PUB_ACK);
my $t_all = time - $t0;
is(scalar @missing, 0, ($N - 1) . ' members got the exact push')
    or diag('missing ' . scalar(@missing) . ": @missing[0 .. ($#missing < 9 ? $#missing : 9)] ...");
diag(sprintf "group of %d: ack %.2fs, all read %.2fs", $N, $t_ack, $t_all);
ok($cl{$sender}->nothing_for(0.2), 'the sender does not get it');

# part-group listing every other member
my @half = @U[grep { $_ % 2 } 1 .. $#U];
my %in = map { $_ => 1 } @half;
$t0 = time;
my $id2 = $cl{$sender}->part_publish($GID, \@half, $payload, raw => 1);
ok($cl{$sender}->expect(cmd => GROUP_PART_PUB_ACK, msgid => $id2, timeout => 20),
    'part-group to ' . scalar(@half) . ' acked');
my $push2 = part_push_msg($GID, $id2, \@half, $payload);
@missing = missing(\@half, $id2, $push2, GROUP_PART_PUB_ACK);
is(scalar @missing, 0, scalar(@half) . ' listed members got the part-group push');
diag(sprintf "part-group of %d: all read %.2fs", scalar @half, time - $t0);
my @leak = grep { !$in{$_} && $_ != $sender && !$cl{$_}->nothing_for(0.002) } @U;
is(scalar @leak, 0, 'members not listed got nothing');

# a group read in several SSCAN pages: 19,000 more members, offline, so
# that the set spans many pages of 2,048 members; the online
# members must each get the message once, wherever their page
my @off = map { 200000 + $_ } 1 .. 19000;
$redis->select_cmd(1, 'SADD', "im_group:$GID", @off[$_ * 1000 .. $_ * 1000 + 999])
    for 0 .. 18;
is($redis->select_cmd(1, 'SCARD', "im_group:$GID"), $N + 19000,
    'the group has ' . ($N + 19000) . ' members');
$t0 = time;
my $id3 = $cl{$sender}->group_publish($GID, $payload, raw => 1);
ok($cl{$sender}->expect(cmd => GROUP_PUB_ACK, msgid => $id3, timeout => 30),
    'group of ' . ($N + 19000) . ' acked');
my $push3 = group_push_msg($GID, $id3, $payload);
@missing = missing([@U[1 .. $#U]], $id3, $push3, GROUP_PUB_ACK);
is(scalar @missing, 0, ($N - 1) . ' online members of the paged group got it')
    or diag('missing ' . scalar(@missing));
diag(sprintf "group of %d: all online read %.2fs", $N + 19000, time - $t0);
select(undef, undef, undef, 0.3);
my @twice = grep { !$cl{$_}->nothing_for(0.001) } @U;
is(scalar @twice, 0, 'nobody got it twice');

$_->close(1000) for values %cl;
$_->wait_closed(2) for values %cl;

$t->done_testing();
