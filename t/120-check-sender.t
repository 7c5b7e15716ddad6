#!/usr/bin/perl
# The sender check (im_check_sender, docs/PROTOCOL.md 3.7; issue 18 item 1):
# alice (1001) said "from":"1003" and bob's page filed her message under
# carol. With the check on, a client's PUBLISH, GROUP_PUBLISH and
# GROUP_PART_PUBLISH must carry a JSON object whose "from" is the sender's
# uid (a number or a string of digits) and whose "to"/"gid", where given,
# are the header's; anything else gets <<10, Cmd, MsgId>>, is delivered to
# nobody, leaves the session up and is counted (refusals of reason
# "sender" in im_status). The TCP API is trusted: its payloads pass
# unread. With the directive absent (the module's default, for legacy
# payloads) the same spoof goes through.
#
# "Delivered to nobody" without a timing window: every refused message is
# followed by an accepted one from the same sender; pushes to bob come in
# the order the server accepted them, so the next push bob gets must be
# the accepted one.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::TCP;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf status/;
use JSON::PP ();

my $t = Test::Nginx->new()->has(qw/http stream redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "alice alice-secret 1001\n"
    . "bob bob-secret 1002\ncarol carol-secret 1003\n");

# no re-push while the test runs: what bob gets once is all he gets
my $QUIET = 'im_repush_interval 60s; im_ping_interval 300s;';

write_conf($t, redis => $redis, uc => $uc,
    main => "im_check_sender on;\n$QUIET");
$t->run();

my $JSON = JSON::PP->new->utf8->canonical;
my $GID = 7;
$redis->select_cmd(1, 'SADD', "im_group:$GID", 1001, 1002);

sub user {
    my ($name, $uid) = @_;
    my $c = IM::Client->new(port => port(9095), auto_pong => 1, uid => $uid);
    is($c->login($name, "$name-secret"), 0, "$name logs in");
    return $c;
}

my $alice = user('alice', 1001);
my $bob = user('bob', 1002);

sub j { $JSON->encode($_[0]) }

# refusals of reason "sender" in an im_status answer
sub sender { ($_[0]{refused_by_reason} // {})->{sender} // 0 }

# alice's next answer, in request order
sub answer {
    my $m = $alice->next;
    return $m ? $m->{raw} : 'nothing';
}

# bob's next message of a push command, acked
sub pushed {
    my $m = $bob->next;
    return undef unless $m;
    $bob->ack($m->{msgid}) if defined $m->{msgid};
    return $m;
}

###############################################################################
# accepted: "from" as a number or a string, "to" and "gid" agreeing

{
    my $p = j({ from => 1001, to => 1002,
        content => { type => 'text', text => 'hi bob' } });
    my $id = $alice->publish(1002, $p, raw => 1);
    is(answer(), pub_ack($id), 'from 1001 (a number): PUB_ACK');
    my $m = pushed();
    is($m && $m->{raw}, push_msg($id, $p), '... bob gets the exact push');
}
{
    my $p = j({ from => '1001', to => '1002',
        content => { type => 'text', text => 'strings' } });
    my $id = $alice->publish(1002, $p, raw => 1);
    is(answer(), pub_ack($id), 'from "1001", to "1002" (strings): PUB_ACK');
    my $m = pushed();
    is($m && $m->{msgid}, $id, '... bob gets it');
}
{
    my $p = j({ from => 1001, to => $GID,
        content => { type => 'text', text => 'group' } });
    my $id = $alice->group_publish($GID, $p, raw => 1);
    is(answer(), group_pub_ack($id), 'GROUP_PUBLISH, to = Gid: acked');
    my $m = pushed();
    is($m && $m->{raw}, group_push_msg($GID, $id, $p),
        '... bob gets the group push');
}
{
    my $p = j({ from => 1001, gid => "$GID",
        content => { type => 'text', text => 'part' } });
    my $id = $alice->part_publish($GID, [1002], $p, raw => 1);
    is(answer(), part_pub_ack($id), 'GROUP_PART_PUBLISH, gid = Gid: acked');
    my $m = pushed();
    is($m && $m->{msgid}, $id, '... bob gets the part-group push');
}

###############################################################################
# refused: each followed by an accepted message, which is the next push

my $before = status();

my @refused = (
    [ 'from 1003 (the report: alice says she is carol)', PUBLISH,
      j({ from => '1003', to => '1002',
          content => { type => 'text', text => 'i am carol' } }) ],
    [ 'from 1003 as a number', PUBLISH,
      j({ from => 1003, to => 1002, content => { type => 'text' } }) ],
    [ 'no from', PUBLISH, j({ to => 1002, content => { type => 'text' } }) ],
    [ 'from "01001" (not the shortest form)', PUBLISH,
      j({ from => '01001', to => 1002 }) ],
    [ 'from the user name', PUBLISH, j({ from => 'alice', to => 1002 }) ],
    [ 'not JSON', PUBLISH, 'hello world' ],
    [ 'a JSON array', PUBLISH, '[{"from":1001,"to":1002}]' ],
    [ 'bytes after the object', PUBLISH, '{"from":1001,"to":1002} x' ],
    [ 'from given twice (1001, then 1003)', PUBLISH,
      '{"from":1001,"to":1002,"from":1003}' ],
    [ 'to 1003 while the header says 1002', PUBLISH,
      j({ from => 1001, to => 1003 }) ],
    [ 'a gid in a 1:1 message', PUBLISH,
      j({ from => 1001, to => 1002, gid => $GID }) ],
    [ 'GROUP_PUBLISH with to 8 for group 7', GROUP_PUBLISH,
      j({ from => 1001, to => 8 }) ],
    [ 'GROUP_PART_PUBLISH with gid 8 for group 7', GROUP_PART_PUBLISH,
      j({ from => 1001, gid => 8 }) ],
    [ 'a NUL escape in from', PUBLISH, '{"from":"1001\u0000","to":1002}' ],
);

my $n = 0;
for my $r (@refused) {
    my ($what, $cmd, $p) = @$r;
    $n++;
    my $id = $cmd == PUBLISH ? $alice->publish(1002, $p, raw => 1)
        : $cmd == GROUP_PUBLISH ? $alice->group_publish($GID, $p, raw => 1)
        : $alice->part_publish($GID, [1002], $p, raw => 1);
    my $ok = $alice->publish(1002, "after refusal $n");
    is(answer(), invalid_packet($cmd, $id),
        "$what: refused with <<10, $cmd, MsgId>>");
    is(answer(), pub_ack($ok), "$what: ... the next message is acked");
    my $m = pushed();
    is($m && $m->{msgid}, $ok, "$what: ... bob never gets the refused one");
}

{
    my $st = status();
    is(sender($st) - sender($before), scalar @refused,
        'im_status counts every refusal under the reason "sender"');
    is(($st->{refused} // 0) - ($before->{refused} // 0),
        scalar @refused, '... and in refused');
}

###############################################################################
# the TCP API is trusted: it speaks as uid 0 and its payloads pass unread

{
    my $tcp = IM::TCP->new(port => port(19095));
    for my $p ('hello world', j({ from => 1003, to => 1002 }),
        j({ from => 0, to => 1002 }))
    {
        my $id = msgid();
        my $a = $tcp->request(publish_msg(1002, $id, $p));
        is($a && $a->{raw}, pub_ack($id), "TCP API, payload $p: acked");
        my $m = pushed();
        is($m && $m->{raw}, push_msg($id, $p), '... and pushed as sent');
    }
    $tcp->close;
}

###############################################################################
# the module's default: off, the spoof goes through (legacy payloads)

$_->close(1000) for $alice, $bob;
$_->wait_closed(2) for $alice, $bob;
$t->stop();
write_conf($t, redis => $redis, uc => $uc, main => $QUIET);
$t->run();

$alice = user('alice', 1001);
$bob = user('bob', 1002);
{
    my $p = j({ from => '1003', to => '1002' });
    my $id = $alice->publish(1002, $p, raw => 1);
    is(answer(), pub_ack($id), 'without im_check_sender: from 1003 is acked');
    my $m = pushed();
    is($m && $m->{raw}, push_msg($id, $p), '... and pushed');
    my $id2 = $alice->publish(1002, 'not json', raw => 1);
    is(answer(), pub_ack($id2), '... so is a payload that is not JSON');
    is(sender(status()), 0, '... no refusal of reason "sender"');
}

$_->close(1000) for $alice, $bob;

$t->done_testing();
