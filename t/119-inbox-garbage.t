#!/usr/bin/perl
# Inbox entries that do not parse (written by hand, a bug, another build)
# are dropped at login, exactly those bytes, logged once each, and never
# pushed: a short one (under the 5-byte entry header), one with a bad
# header and one whose push does not parse. A real message stored beside
# them still arrives.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until/;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/standard/;

my ($t, $redis, $uc) = standard(stream => 0,
    main => 'im_repush_interval 60s;');

my $key = 'im:inbox:1002';
my @garbage = ("\x01\x00", "\x07" . 'x' x 40, "\x01\xff\xff\xff\xff\x63zz");
$redis->cmd(RPUSH => $key, $_) for @garbage;

my $a = IM::Client->new(port => port(9095), auto_pong => 1);
is($a->login('alice', 'alice-secret'), 0, 'alice logs in');
my $id = $a->publish(1002, 'real');
ok($a->expect(cmd => PUB_ACK, msgid => $id), 'a real message stored');
is($redis->cmd(LLEN => $key), 4, 'the inbox holds three bad entries and it');

my $b = IM::Client->new(port => port(9095), auto_pong => 1);
is($b->login('bob', 'bob-secret'), 0, 'bob logs in');
my $m = $b->expect(cmd => PUBLISH);
ok($m && $m->{msgid} eq $id, 'bob gets the real message, nothing before it');
$b->ack($id);

ok(wait_until(sub { ($redis->cmd(LLEN => $key) // -1) == 0 }),
   'every entry left the inbox, the short one too');
my @lines = $t->error_log =~ /uid 1002: unreadable inbox entry dropped/g;
is(scalar @lines, 3, 'each bad entry logged once');

$t->done_testing();
