package Test::Nginx;

# Test::Nginx-style harness for ngx_im (interface modelled on nginx-tests'
# lib/Test/Nginx.pm; independent implementation).
#
#   my $t = Test::Nginx->new()->has(qw/http stream/)->plan(3);
#   $t->write_file_expand('nginx.conf', <<'EOF');
#   %%TEST_GLOBALS%%
#   events {}
#   http { %%TEST_GLOBALS_HTTP%%  server { listen 127.0.0.1:%%PORT_8080%%; } }
#   EOF
#   $t->run();
#
# At the end of the test file every nginx is stopped, every daemon killed,
# and error.log is checked for [alert]/[emerg] lines, crashed workers and
# sanitizer reports (one extra test, counted by ->plan).

use strict;
use File::Spec;
use warnings;

use Exporter qw/import/;
our @EXPORT    = qw/port http http_get http_head log_in log_out/;
our @EXPORT_OK = qw/free_port find_problems http_start http_end http_content
    wait_until alive sanitizer_reports/;

use Cwd qw/abs_path/;
use File::Basename qw/dirname/;
use File::Path qw/rmtree/;
use File::Temp qw/tempdir/;
use IO::Socket::INET;
use POSIX qw/WNOHANG/;
use Time::HiRes qw/time sleep/;
use Test::More ();

###############################################################################

our $REPO = abs_path(dirname(__FILE__) . '/../../..');
our $NGINX = $ENV{TEST_NGINX_BINARY} // '/usr/sbin/nginx';
our $STREAM_MODULE = $ENV{TEST_NGINX_STREAM_MODULE}
    // '/usr/lib/nginx/modules/ngx_stream_module.so';
our $IM_MODULE = $ENV{IM_MODULE} // "$REPO/build/nginx/objs/ngx_im_module.so";
# nginx runs with -p in the test dir: a relative path would be looked up there
$IM_MODULE = File::Spec->rel2abs($IM_MODULE);

# default bound of every wait, seconds (scale it up for sanitizer builds)
our $TIMEOUT = $ENV{TEST_NGINX_TIMEOUT} // 5;
our $STOP_TIMEOUT = $ENV{TEST_NGINX_STOP_TIMEOUT} // 10;

# A sanitizer run (ASAN_OPTIONS or UBSAN_OPTIONS set: make -f Makefile.dev
# prove-asan). Reports go to stderr, which nginx points at its error log once
# it runs; find_problems() knows them, as it knows alerts.
our $SANITIZER = defined $ENV{ASAN_OPTIONS} || defined $ENV{UBSAN_OPTIONS};

# a line of a sanitizer report that says what was found
our $SAN_RE = qr/(?:Address|Leak|Thread|Memory|UndefinedBehavior)Sanitizer
    |runtime\ error:/x;

our %ports;            # placeholder number -> { port, lock }
my $free_seq = 0;
my @instances;         # every Test::Nginx object of this process
my $check_done = 0;    # the "no alerts" test was emitted

# A write to a socket the server closed must not kill the test silently
# (SIGPIPE would skip END and leak nginx and helpers).
$SIG{PIPE} = 'IGNORE';

# Ctrl-C / kill: exit through END so helpers are killed.
my %signo = (HUP => 1, INT => 2, TERM => 15);
for my $sig (keys %signo) {
    next if defined $SIG{$sig} && $SIG{$sig} ne 'DEFAULT' && $SIG{$sig} ne '';
    $SIG{$sig} = sub { Test::More::diag("caught SIG$sig, cleaning up");
        exit 128 + $signo{$sig} };
}

###############################################################################

sub new {
    my ($class, %opts) = @_;

    my $self = bless {
        _pid      => $$,
        _im       => exists $opts{im} ? $opts{im} : 1,
        # nginx's compiled-in prefix instead of the test dir (below)
        _sysprefix => $opts{system_prefix} // 0,
        _alerts   => 1,          # 0 = problems are reported as TODO
        _allow    => [],
        _daemons  => [],         # { pid, log }
        _listen   => {},         # file name -> [ placeholder numbers ]
        _problems => [],         # harness-detected problems
        _started  => 0,
    }, $class;

    Test::More::BAIL_OUT("no nginx binary at $NGINX") unless -x $NGINX;

    if ($self->{_im} && !-f $IM_MODULE) {
        Test::More::plan(skip_all =>
            "ngx_im module not built: $IM_MODULE is missing "
            . "(build it, or set IM_MODULE)");
    }

    $self->{_testdir} = tempdir('nginx-test-XXXXXXXXXX', TMPDIR => 1)
        or die "Can't create temp directory: $!\n";
    # workers run as "nobody" when the suite runs as root
    chmod 0755, $self->{_testdir};

    push @instances, $self;
    return $self;
}

sub testdir { $_[0]{_testdir} }
sub im_module { $IM_MODULE }
sub repo { $REPO }

###############################################################################
# features

sub _nginx_v {
    my ($self) = @_;
    $self->{_nginx_v} //= `$NGINX -V 2>&1`;
    return $self->{_nginx_v};
}

sub has_module {
    my ($self, $feature) = @_;

    my $v = $self->_nginx_v;
    my %check = (
        http         => sub { $v !~ /--without-http(?!\S)/ },
        stream       => sub { -f $STREAM_MODULE || $v =~ /--with-stream(?!=dynamic)(?!\S)/ },
        im           => sub { -f $IM_MODULE },
        ssl          => sub { $v =~ /--with-http_ssl_module/ },
        http_ssl     => sub { $v =~ /--with-http_ssl_module/ },
        stream_ssl   => sub { $v =~ /--with-stream_ssl_module/ },
        http_v2      => sub { $v =~ /--with-http_v2_module/ },
        proxy        => sub { $v !~ /--without-http_proxy_module/ },
        auth_request => sub { $v =~ /--with-http_auth_request_module/ },
        stub_status  => sub { $v =~ /--with-http_stub_status_module/ },
        debug        => sub { $v =~ /--with-debug/ },
        redis        => sub { -x '/usr/bin/redis-server' },
        socket_ssl   => sub { eval { require IO::Socket::SSL; 1 } },
        mojo         => sub { eval { require Mojolicious; 1 } },
        openssl      => sub { -x '/usr/bin/openssl' },
    );
    return $check{$feature}->() ? 1 : 0 if $check{$feature};
    return $v =~ /\Q$feature\E/ ? 1 : 0;
}

sub has {
    my ($self, @features) = @_;
    for my $f (@features) {
        next if $self->has_module($f);
        my $why = $f eq 'im' ? "ngx_im module not built ($IM_MODULE)"
            : "no $f available";
        Test::More::plan(skip_all => $why);
    }
    return $self;
}

sub has_daemon {
    my ($self, $daemon) = @_;
    my $found = grep { -x "$_/$daemon" } split /:/, $ENV{PATH} // '';
    Test::More::plan(skip_all => "$daemon not found") unless $found || -x $daemon;
    return $self;
}

###############################################################################
# plan and the alert check

sub plan {
    my ($self, $n) = @_;
    Test::More::plan(tests => $n + 1);
    $self->{_plan} = 1;
    return $self;
}

sub done_testing {
    my ($self) = @_;
    _finish_all();
    Test::More::done_testing();
}

sub todo_alerts {
    my ($self) = @_;
    $self->{_alerts} = 0;
    return $self;
}

sub allow_alerts {
    my ($self, @re) = @_;
    push @{$self->{_allow}}, map { ref $_ ? $_ : qr/\Q$_\E/ } @re;
    return $self;
}

# Lines of an error log that fail a test: alerts, emergencies, crashed
# workers, sanitizer reports. Lines matching one of @allow are left out.
sub find_problems {
    my ($log, @allow) = @_;
    my @bad;
    for my $line (split /\n/, $log // '') {
        next unless $line =~ /\[(?:alert|emerg)\]/
            || $line =~ /exited on signal/
            || $line =~ $SAN_RE;
        next if grep { $line =~ $_ } @allow;
        push @bad, $line;
    }
    return @bad;
}

# The sanitizer reports in $text, each with the lines that follow it (its
# stack) up to the next nginx log line or report, at most 60 lines; frames
# in a loaded module, "(/path/module.so+0xOFFSET)", get their function and
# line from addr2line (the runtime leaves them bare).
sub sanitizer_reports {
    my ($text) = @_;
    my @lines = split /\n/, $text // '';
    my (@out, %sym);
    my $i = 0;
    while ($i < @lines) {
        if ($lines[$i++] !~ $SAN_RE) {
            next;
        }
        my @r = ($lines[$i - 1]);
        while ($i < @lines && @r < 60 && $lines[$i] !~ m{^\d{4}/\d\d/\d\d }
            && $lines[$i] !~ /runtime error:/)
        {
            my $l = $lines[$i++];
            if ($l =~ /\((\/\S+\.so)\+(0x[0-9a-f]+)\)/) {
                my ($so, $off) = ($1, $2);
                $sym{"$so $off"} //= join ' ', map { chomp; $_ }
                    `addr2line -fie '$so' $off 2>/dev/null`;
                $l .= " $sym{\"$so $off\"}";
            }
            push @r, $l;
        }
        push @out, join "\n", @r;
    }
    return @out;
}

# Output of an nginx the test ran itself (nginx -t): its sanitizer reports
# fail the file like those of error.log; its alerts may be what is tested.
sub check_output {
    my ($self, $text) = @_;
    push @{$self->{_problems}}, grep { $_ =~ $SAN_RE } split /\n/,
        $text // '';
    return $self;
}

# problems of this instance so far (error.log plus harness notes)
sub problems {
    my ($self) = @_;
    my $log = $self->error_log;
    my $stderr = -f "$self->{_testdir}/nginx.stderr"
        ? $self->read_file('nginx.stderr') : '';
    # emergencies of a failed start are shown by run(); don't count them twice
    my @p = find_problems($log . "\n" . $stderr, @{$self->{_allow}});
    my %seen;
    @p = grep { !$seen{$_}++ } @p;
    push @p, grep { my $x = $_; !grep { $x =~ $_ } @{$self->{_allow}} }
        @{$self->{_problems}};
    return @p;
}

sub _finish {
    my ($self) = @_;
    return if $self->{_finished} || $self->{_pid} != $$;
    $self->{_finished} = 1;
    eval { $self->stop(); 1 } or Test::More::diag("stop: $@");
    $self->stop_daemons();
}

sub _finish_all {
    return if $check_done;
    my @mine = grep { $_->{_pid} == $$ } @instances;
    return unless @mine;
    $_->_finish for @mine;
    $check_done = 1;

    my (@bad, $todo, $san);
    for my $t (@mine) {
        my @p = $t->problems;
        next unless @p;
        push @bad, @p;
        $todo = 1 if !$t->{_alerts};
        $san = 1 if grep { $_ =~ $SAN_RE } @p;
    }
    # todo_alerts is for crashes a test causes, never for a sanitizer report
    $todo = 0 if $san;
    my $planned = grep { $_->{_plan} } @mine;

    if ($planned || @bad) {
        my $tb = Test::More->builder;
        if ($todo && @bad) {
            $tb->todo_start('alerts');
            Test::More::is(join("\n", @bad), '', 'no alerts');
            $tb->todo_end;
        } else {
            Test::More::is(join("\n", @bad), '', 'no alerts');
        }
    }

    for my $t (@mine) {
        next unless $san;
        my $d = $t->{_testdir};
        my $text = join "\n", $t->error_log,
            -f "$d/nginx.stderr" ? $t->read_file('nginx.stderr') : ();
        Test::More::diag($_) for sanitizer_reports($text);
    }

    for my $t (@mine) {
        if ($ENV{TEST_NGINX_CATLOG}) {
            Test::More::diag($t->error_log);
        }
        if ($ENV{TEST_NGINX_LEAVE}) {
            Test::More::diag("test directory left: $t->{_testdir}");
        } else {
            eval { rmtree($t->{_testdir}) };
        }
    }
}

END {
    my $status = $?;
    _finish_all();
    $? = $status;
}

###############################################################################
# ports

sub _port_range {
    my ($lo) = eval {
        open my $f, '<', '/proc/sys/net/ipv4/ip_local_port_range' or die;
        split ' ', scalar <$f>;
    };
    $lo = 32768 unless $lo && $lo > 12000;
    return (10000, $lo - 1);    # below the ephemeral range
}

sub _grab_port {
    my ($lo, $hi) = _port_range();
    for (1 .. 200) {
        my $p = $lo + int(rand($hi - $lo + 1));
        next if grep { $_->{port} == $p } values %ports;
        # a UDP socket on the same number is our cross-process lock
        my $lock = IO::Socket::INET->new(Proto => 'udp',
            LocalAddr => "127.0.0.1:$p") or next;
        my $s = IO::Socket::INET->new(Proto => 'tcp',
            LocalAddr => "127.0.0.1:$p", Listen => 1, ReuseAddr => 1)
            or next;
        close $s;
        return ($p, $lock);
    }
    die "no free port found\n";
}

# port(NNNN): the free port standing for placeholder %%PORT_NNNN%%
sub port {
    my ($num) = @_;
    unless ($ports{$num}) {
        my ($p, $lock) = _grab_port();
        $ports{$num} = { port => $p, lock => $lock };
    }
    return $ports{$num}{port};
}

# a fresh free port, reserved for the life of this process
sub free_port {
    return port('free' . ++$free_seq);
}

###############################################################################
# files

sub write_file {
    my ($self, $name, $content) = @_;
    my $path = "$self->{_testdir}/$name";
    my $tmp = "$path.tmp$$";
    open my $f, '>', $tmp or die "Can't create $name: $!\n";
    binmode $f;
    print $f $content;
    close $f or die "Can't write $name: $!\n";
    rename $tmp, $path or die "Can't rename $name: $!\n";
    return $self;
}

sub read_file {
    my ($self, $name) = @_;
    my $path = $name =~ m{^/} ? $name : "$self->{_testdir}/$name";
    open my $f, '<', $path or die "Can't open $name: $!\n";
    binmode $f;
    local $/;
    my $c = <$f>;
    return $c // '';
}

sub test_globals {
    my ($self) = @_;
    my $d = $self->{_testdir};
    my $s = "load_module $STREAM_MODULE;\n";
    $s .= "load_module $IM_MODULE;\n" if $self->{_im};
    $s .= "pid $d/nginx.pid;\n";
    $s .= "error_log $d/error.log debug;\n";
    $s .= "$ENV{TEST_NGINX_GLOBALS}\n" if $ENV{TEST_NGINX_GLOBALS};
    return $s;
}

sub test_globals_http {
    my ($self) = @_;
    my $d = $self->{_testdir};
    my $s = "root $d;\n"
        . "access_log $d/access.log;\n"
        . "client_body_temp_path $d/client_body_temp;\n"
        . "proxy_temp_path $d/proxy_temp;\n"
        . "fastcgi_temp_path $d/fastcgi_temp;\n"
        . "uwsgi_temp_path $d/uwsgi_temp;\n"
        . "scgi_temp_path $d/scgi_temp;\n";
    $s .= "$ENV{TEST_NGINX_GLOBALS_HTTP}\n" if $ENV{TEST_NGINX_GLOBALS_HTTP};
    return $s;
}

sub test_globals_stream {
    my ($self) = @_;
    my $s = '';
    $s .= "$ENV{TEST_NGINX_GLOBALS_STREAM}\n"
        if $ENV{TEST_NGINX_GLOBALS_STREAM};
    return $s;
}

sub expand {
    my ($self, $content, $name) = @_;

    # ports nginx will listen on: run() waits for them
    if (defined $name) {
        my @listen;
        for my $l ($content =~ /^\s*listen\s+([^;]*);/gm) {
            next if $l =~ /\budp\b/;
            push @listen, $l =~ /%%PORT_(\d+)%%/g;
        }
        $self->{_listen}{$name} = \@listen;
        $self->{_has_globals} = $content =~ /%%TEST_GLOBALS%%/
            if $name eq 'nginx.conf';
    }

    # live WebSocket sessions keep a worker through a graceful stop, as
    # they should; a test's stop() should not wait for the clients
    my $wst = $content =~ /worker_shutdown_timeout/ ? ''
        : "worker_shutdown_timeout 3s;\n";
    $content =~ s/%%TEST_GLOBALS%%/$self->test_globals . $wst/ge;
    $content =~ s/%%TEST_GLOBALS_HTTP%%/$self->test_globals_http/ge;
    $content =~ s/%%TEST_GLOBALS_STREAM%%/$self->test_globals_stream/ge;
    $content =~ s/%%TESTDIR%%/$self->{_testdir}/g;
    $content =~ s/%%IM_MODULE%%/$IM_MODULE/g;
    $content =~ s/%%PORT_(\d+)%%/port($1)/ge;

    # a binary upgrade execs nginx with only the variables named by env
    # (the ASan build also has its options compiled in: Makefile.dev)
    $content = "env ASAN_OPTIONS;\nenv UBSAN_OPTIONS;\n" . $content
        if $SANITIZER && defined $name && $name eq 'nginx.conf';
    return $content;
}

sub write_file_expand {
    my ($self, $name, $content) = @_;
    return $self->write_file($name, $self->expand($content, $name));
}

###############################################################################
# nginx

# true while process $pid runs (a zombie counts as gone; our own exited
# child is reaped)
sub alive { _alive(@_) }

sub _alive {
    my ($pid) = @_;
    waitpid($pid, WNOHANG) if $pid;
    return 0 unless $pid && kill 0, $pid;
    # a zombie (reparented to a non-reaping init) counts as dead
    if (open my $f, '<', "/proc/$pid/stat") {
        my $st = <$f> // '';
        return 0 if $st =~ /\)\s+[ZX]\s/;
    }
    return 1;
}

sub _children_of {
    my ($ppid) = @_;
    my @kids;
    opendir my $d, '/proc' or return;
    for my $p (grep { /^\d+$/ } readdir $d) {
        open my $f, '<', "/proc/$p/stat" or next;
        my $st = <$f> // next;
        push @kids, $p if $st =~ /\)\s+\S+\s+(\d+)\s/ && $1 == $ppid;
    }
    return @kids;
}

# members of process group $pgid (only when $pgid leads a group of its own:
# never our own group)
sub _group_of {
    my ($pgid) = @_;
    return () if !$pgid || $pgid == getpgrp();
    my @m;
    opendir my $d, '/proc' or return;
    for my $p (grep { /^\d+$/ } readdir $d) {
        open my $f, '<', "/proc/$p/stat" or next;
        my $st = <$f> // next;
        push @m, $p if $st =~ /\)\s+\S+\s+\d+\s+(\d+)\s/ && $1 == $pgid
            && $st !~ /\)\s+[ZX]\s/;
    }
    return @m;
}

# -p test dir; with system_prefix => 1 nginx keeps its compiled-in prefix
# (Debian: /usr/share/nginx), so that the relative paths of installed
# snippets (load_module modules/...) resolve as in production; every other
# path of such a config must then be absolute.
sub _nginx_args {
    my ($self) = @_;
    my $d = $self->{_testdir};
    my @a = $self->{_sysprefix}
        ? ('-c', "$d/nginx.conf", '-e', "$d/error.log")
        : ('-p', "$d/", '-c', 'nginx.conf', '-e', "$d/error.log");
    push @a, '-g', "pid $d/nginx.pid; error_log $d/error.log debug;"
        unless $self->{_has_globals};
    push @a, @{$self->{_args} || []};
    return @a;
}

sub args {
    my ($self, @args) = @_;
    $self->{_args} = \@args;
    return $self;
}

sub _fail_start {
    my ($self, $why) = @_;
    my $d = $self->{_testdir};
    my $log = -f "$d/error.log" ? $self->read_file('error.log') : '';
    my $err = -f "$d/nginx.stderr" ? $self->read_file('nginx.stderr') : '';
    # keep it readable: debug lines are noise here
    my @lines = grep { !/\[debug\]/ } split /\n/, $log;
    @lines = @lines[-40 .. -1] if @lines > 40;
    die "nginx: $why\n--- stderr:\n$err--- error.log (without debug):\n"
        . join("\n", @lines) . "\n";
}

sub run {
    my ($self, $conf) = @_;
    my $d = $self->{_testdir};

    $self->write_file_expand('nginx.conf', $self->read_file($conf))
        if defined $conf;
    die "nginx already running\n" if $self->{_started};

    unlink "$d/nginx.pid";
    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$d/nginx.stderr";
        open STDERR, '>&', \*STDOUT;
        $SIG{$_} = 'DEFAULT' for qw/INT TERM HUP PIPE/;
        exec($NGINX, $self->_nginx_args) or POSIX::_exit(127);
    }

    # daemon on: the starter exits once the master runs (non-zero on
    # config errors); daemon off: the starter is the master.
    my $deadline = time + $TIMEOUT;
    my ($master, $status);
    while (time < $deadline) {
        if (!defined $status && waitpid($pid, WNOHANG) == $pid) {
            $status = $?;
            $self->_fail_start("exited with status " . ($status >> 8)
                . ($status & 127 ? " (signal " . ($status & 127) . ")" : ''))
                if $status;
        }
        if (-s "$d/nginx.pid") {
            chomp($master = $self->read_file('nginx.pid'));
            last if $master && (defined $status || $master == $pid);
        }
        sleep 0.02;
    }
    $self->_fail_start("no pid file after ${TIMEOUT}s") unless $master;
    $self->{_master} = $master;
    $self->{_child} = $master == $pid ? $pid : undef;
    $self->{_started} = 1;

    $self->_wait_listen()
        or $self->_fail_start("not listening on all configured ports");
    return $self;
}

sub try_run {
    my ($self, $message) = @_;
    eval { $self->run(); 1 } and return $self;
    Test::More::diag($@) if $ENV{TEST_NGINX_VERBOSE};
    $self->{_problems} = [];
    $self->allow_alerts(qr/\[emerg\]/);
    Test::More::plan(skip_all => $message);
}

sub _wait_listen {
    my ($self) = @_;
    my %seen;
    my @ports = grep { !$seen{$_}++ } map { @$_ } values %{$self->{_listen}};
    for my $num (@ports) {
        $self->waitforsocket('127.0.0.1:' . port($num), 20) or return 0;
    }
    return 1;
}

sub master_pid { $_[0]{_started} ? $_[0]{_master} : undef }

# pids of the master's children (workers, cache helpers)
sub worker_pids {
    my ($self) = @_;
    return () unless $self->{_started};
    return sort { $a <=> $b } _children_of($self->{_master});
}

sub reload {
    my ($self) = @_;
    return $self unless $self->{_started};

    my $mark = $self->log_mark;
    my %old = map { $_ => 1 } $self->worker_pids;
    kill 'HUP', $self->{_master};

    # done when the master has a child it did not have before the HUP (a
    # new worker), or logged an [emerg] (the new configuration is refused);
    # the process list is the condition itself, where the log text is not:
    # "start worker processes" comes before the forks
    my $ok = wait_until(sub {
        return 1 if grep { !$old{$_} } $self->worker_pids;
        return $self->error_log($mark) =~ /\[emerg\]/;
    }, $TIMEOUT);
    Test::More::diag("reload: no new workers after ${TIMEOUT}s") unless $ok;
    $self->_wait_listen();
    return $self;
}

sub stop {
    my ($self) = @_;
    return $self unless $self->{_started};

    # the pid file is authoritative (a binary upgrade changes the master)
    my $master = $self->{_master};
    my $file = "$self->{_testdir}/nginx.pid";
    if (-s $file) {
        my ($p) = $self->read_file($file) =~ /(\d+)/;
        $master = $p if $p && _alive($p);
    }
    $self->{_master} = $master;

    # a daemonized master leads its own process group: every nginx process
    # of this instance (workers, an old/new master) is in it
    my @group = _group_of($master);
    my @others = grep { $_ != $master } @group, _children_of($master);

    kill 'QUIT', $master;
    my $gone = sub {
        waitpid($master, WNOHANG);
        return !_alive($master);
    };
    unless (wait_until($gone, $STOP_TIMEOUT)) {
        push @{$self->{_problems}},
            "nginx did not exit within ${STOP_TIMEOUT}s of SIGQUIT (killed)";
        push @others, _children_of($master);
        kill 'KILL', $master, @others;
        wait_until($gone, $TIMEOUT);
    }

    # processes outliving their master would keep ports and clients busy
    my %seen;
    @others = grep { !$seen{$_}++ } @others, _group_of($master);
    my @left = grep { _alive($_) } @others;
    if (@left) {
        wait_until(sub { !grep { _alive($_) } @left }, 1);
        @left = grep { _alive($_) } @left;
    }
    if (@left) {
        push @{$self->{_problems}},
            "nginx process(es) @left still running after the master exited (killed)";
        kill 'KILL', @left;
    }
    # reap what was re-parented to us
    wait_until(sub { !grep { waitpid($_, WNOHANG) == 0 } @others }, 1);
    $self->{_started} = 0;
    $self->{_child} = undef;
    return $self;
}

###############################################################################
# helper daemons

sub run_daemon {
    my ($self, $code, @args) = @_;
    my $d = $self->{_testdir};

    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) {
        my $log = "$d/daemon-$$.log";
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        STDOUT->autoflush(1);
        STDERR->autoflush(1);
        $SIG{$_} = 'DEFAULT' for qw/INT TERM HUP PIPE/;
        if (ref $code eq 'CODE') {
            my $ok = eval { $code->(@args); 1 };
            print STDERR "daemon died: $@" unless $ok;
            POSIX::_exit($ok ? 0 : 1);
        }
        { no warnings 'exec'; exec($code, @args); }
        print STDERR "exec $code: $!\n";
        POSIX::_exit(127);
    }

    push @{$self->{_daemons}}, { pid => $pid, log => "$d/daemon-$pid.log" };
    $self->{_last_daemon} = $pid;
    return $self;
}

sub daemon_pid { $_[0]{_last_daemon} }

sub daemon_log {
    my ($self, $pid) = @_;
    $pid //= $self->{_last_daemon};
    my $f = "$self->{_testdir}/daemon-$pid.log";
    return -f $f ? $self->read_file($f) : '';
}

# wait for a daemon to exit by itself; true (and forgotten) when it did
sub wait_daemon {
    my ($self, $pid, $timeout) = @_;
    my $ok = wait_until(sub { waitpid($pid, WNOHANG) != 0 },
        $timeout // $TIMEOUT);
    $self->{_daemons} = [grep { $_->{pid} != $pid } @{$self->{_daemons}}]
        if $ok;
    return $ok;
}

# signal a daemon (TERM by default), KILL it after a bound, reap it
sub stop_daemon {
    my ($self, $pid, $sig) = @_;
    kill $sig // 'TERM', $pid;
    unless ($self->wait_daemon($pid, $TIMEOUT)) {
        kill 'KILL', $pid;
        $self->wait_daemon($pid, $TIMEOUT);
    }
    return $self;
}

sub stop_daemons {
    my ($self) = @_;
    return $self if $self->{_pid} != $$;
    my @d = @{$self->{_daemons}};
    kill 'TERM', map { $_->{pid} } @d;
    for my $dm (@d) {
        next if wait_until(sub { waitpid($dm->{pid}, WNOHANG) != 0 }, 2);
        kill 'KILL', $dm->{pid};
        waitpid($dm->{pid}, 0);
    }
    $self->{_daemons} = [];
    return $self;
}

###############################################################################
# waiting

# poll $cond every 20 ms until it is true (returns its value) or timeout
sub wait_until {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout // $TIMEOUT);
    while (1) {
        my $r = $cond->();
        return $r if $r;
        return undef if time >= $deadline;
        sleep 0.02;
    }
}

sub waitforsocket {
    my ($self, $peer, $timeout) = @_;
    return wait_until(sub {
        my $s = IO::Socket::INET->new(Proto => 'tcp', PeerAddr => $peer,
            Timeout => 1);
        return defined $s ? 1 : 0;
    }, $timeout);
}

sub waitforfile {
    my ($self, $file, $timeout) = @_;
    return wait_until(sub { -e $file }, $timeout);
}

###############################################################################
# error log

sub error_log {
    my ($self, $from) = @_;
    my $f = "$self->{_testdir}/error.log";
    return '' unless -f $f;
    open my $fh, '<', $f or return '';
    binmode $fh;
    seek $fh, $from, 0 if $from;
    local $/;
    return <$fh> // '';
}

# current size of error.log: pass it to error_log() / wait_for_log()
sub log_mark {
    my ($self) = @_;
    return -s "$self->{_testdir}/error.log" || 0;
}

# wait until error.log (from $opts{from}) matches $re; returns the match
sub wait_for_log {
    my ($self, $re, %opts) = @_;
    return wait_until(sub {
        my @m = $self->error_log($opts{from}) =~ $re;
        return @m ? ($m[0] // 1) : 0;
    }, $opts{timeout});
}

###############################################################################
# plain HTTP helpers (as in nginx-tests)

sub log_core {
    return unless $ENV{TEST_NGINX_VERBOSE};
    my ($prefix, $msg) = @_;
    ($prefix, $msg) = ('', $prefix) unless defined $msg;
    $msg = substr($msg, 0, 2048) . '(...)' if length $msg > 2048;
    $msg =~ s/([^\x20-\x7e\n])/sprintf('\\x%02x', ord $1)/ge;
    $msg =~ s/^/# $prefix /gm;
    $msg .= "\n" unless $msg =~ /\n\z/;
    print $msg;
}

sub log_out { log_core('>>', @_) }
sub log_in  { log_core('<<', @_) }

sub http_get {
    my ($url, %extra) = @_;
    return http("GET $url HTTP/1.0\r\nHost: localhost\r\n\r\n", %extra);
}

sub http_head {
    my ($url, %extra) = @_;
    return http("HEAD $url HTTP/1.0\r\nHost: localhost\r\n\r\n", %extra);
}

sub http {
    my ($request, %extra) = @_;
    my $s = http_start($request, %extra);
    return $s if $extra{start} || !defined $s;
    return http_end($s, %extra);
}

sub http_start {
    my ($request, %extra) = @_;
    my $s;
    my $ok = eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm($extra{timeout} // $TIMEOUT);
        $s = $extra{socket} || IO::Socket::INET->new(Proto => 'tcp',
            PeerAddr => '127.0.0.1:' . ($extra{port} // port(8080)))
            or die "Can't connect to nginx: $!\n";
        if ($extra{SSL}) {
            require IO::Socket::SSL;
            IO::Socket::SSL->start_SSL($s,
                SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_NONE())
                or die IO::Socket::SSL::errstr() . "\n";
        }
        log_out($request);
        $s->print($request);
        $s->print($extra{body}) if defined $extra{body};
        alarm(0);
        1;
    };
    alarm(0);
    unless ($ok) {
        log_in("died: $@");
        return undef;
    }
    return $s;
}

sub http_end {
    my ($s, %extra) = @_;
    my $reply;
    my $ok = eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm($extra{timeout} // $TIMEOUT);
        local $/;
        $reply = $s->getline();
        $s->close();
        alarm(0);
        1;
    };
    alarm(0);
    unless ($ok) {
        log_in("died: $@");
        return undef;
    }
    log_in($reply);
    return $reply;
}

sub http_content {
    my ($text) = @_;
    return undef unless defined $text && $text =~ /\r?\n\r?\n(.*)\z/s;
    my $body = $1;
    my ($headers) = $text =~ /\A(.*?)\r?\n\r?\n/s;
    return $body unless $headers =~ /^Transfer-Encoding:\s*chunked/mi;
    my $out = '';
    while ($body =~ /\G([0-9a-f]+)[^\r\n]*\r\n/gci) {
        my $len = hex $1;
        last unless $len;
        $out .= substr($body, pos($body), $len);
        pos($body) += $len + 2;
    }
    return $out;
}

1;
