#!/usr/bin/perl
# "im_alone off" (src/ngx_im_alone.c): no uid is ever marked alone, so every
# message goes through the uid's channel. Sender and receiver on one
# worker, 20 messages each way of delivery: all arrive in order, the
# worker's channel_skipped stays 0, and Redis counts at least one PUBLISH
# per message (with the default, t/211 sees the channel skipped).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/standard status/;

# re-push far away: bob acks as he reads, but nothing may depend on when
my ($t, $redis, $uc) = standard(stream => 0,
    main => "im_alone off;\nim_repush_interval 60s;");

sub publishes {
    my $info = $redis->cmd(INFO => 'commandstats') // '';
    return $info =~ /^cmdstat_publish:calls=(\d+)/m ? $1 : 0;
}

my $a = IM::Client->new(port => port(9095), auto_pong => 1);
is($a->login('alice', 'alice-secret'), 0, 'alice logs in');
my $b = IM::Client->new(port => port(9095), auto_pong => 1);
is($b->login('bob', 'bob-secret'), 0, 'bob logs in');

my $p0 = publishes();
my (@sent, @got);
for my $i (1 .. 20) {
    my $id = $a->publish(1002, "m$i");
    push @sent, $id if $a->expect(cmd => PUB_ACK, msgid => $id);
    my $m = $b->expect(cmd => PUBLISH);
    next unless $m;
    push @got, $m->{msgid};
    $b->ack($m->{msgid});
}

is(scalar @sent, 20, '20 messages acked to alice');
is_deeply(\@got, \@sent, 'bob gets all 20, in order');
is(status()->{channel_skipped}, 0, 'the channel was never skipped');
cmp_ok(publishes() - $p0, '>=', 20, 'Redis saw a PUBLISH per message ('
    . (publishes() - $p0) . ')');

$t->done_testing();
