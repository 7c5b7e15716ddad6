#!/usr/bin/perl
# Smoke: login, 1:1 over ws with acks, offline delivery after login.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;

my $t = Test::Nginx->new()->has(qw/http/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => <<'U');
alice alice-secret 1001
bob bob-secret 1002
U

$t->write_file_expand('nginx.conf', <<"EOF2");
%%TEST_GLOBALS%%
daemon on;
worker_processes 1;
im_redis ${\ $redis->addr};
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_9095%%;
        location /ws { im_websocket; im_auth /_auth; }
        location = /_auth {
            internal;
            proxy_pass http://127.0.0.1:${\ $uc->port}/auth;
            proxy_method POST;
            proxy_pass_request_headers off;
            proxy_set_header Content-Type "application/x-www-form-urlencoded;charset=utf-8";
            proxy_set_header Accept application/json;
            proxy_set_body "username=\$im_username&password=\$im_password";
        }
        location = /status { im_status; }
    }
}
EOF2
$t->run();

my $a = IM::Client->new(port => port(9095), auto_pong => 1);
is($a->login('alice', 'alice-secret'), 0, 'alice logs in');
my $b = IM::Client->new(port => port(9095), auto_pong => 1);
is($b->login('bob', 'bob-secret'), 0, 'bob logs in');
my $bad = IM::Client->new(port => port(9095));
is($bad->login('bob', 'nope'), 3, 'wrong password is code 3');

my $id = $a->publish(1002, 'hello');
ok($a->expect(cmd => PUB_ACK, msgid => $id), 'alice gets PUB_ACK');
my $m = $b->expect(cmd => PUBLISH);
ok($m && $m->{msgid} eq $id, 'bob gets the push with the same MsgId');
$b->ack($id);

$b->ws->close(1000);
sleep 1;
my $id2 = $a->publish(1002, 'while away');
ok($a->expect(cmd => PUB_ACK, msgid => $id2), 'acked while bob is offline');
my $b2 = IM::Client->new(port => port(9095), auto_pong => 1);
is($b2->login('bob', 'bob-secret'), 0, 'bob back');
$m = $b2->expect(cmd => PUBLISH);
ok($m && $m->{msgid} eq $id2, 'offline message delivered after login');

done_testing();
