/*
 * ctlake: a real single-node Elasticsearch 8.19, embedded from the Maven Central jars, for local
 * development and tests (see infra/elasticsearch/README.md).
 *
 *   java -Xms512m -Xmx512m -cp CLASSDIR:JARDIR/* org.elasticsearch.node.CtlakeElasticsearch \
 *        --home DIR --http-port N --transport-port N [--cluster-name NAME] [--node-name NAME] [-E key=value ...]
 *
 * It lives in package org.elasticsearch.node because NodeConstruction and NodeServiceProvider are
 * package-private. Plugins are loaded from the classpath by MockPluginsService (test framework jar):
 * Netty4Plugin (HTTP + transport) and CtlakeRootPlugin ("GET /" for the clients' ping()/info()).
 *
 * Exit codes: 2 bad arguments, 3 a port is in use, 4 the home folder is in use by another node,
 * 1 any other start-up failure. SIGTERM/SIGINT close the node cleanly in a shutdown hook; the JVM
 * then exits with its usual 143/130.
 */
package org.elasticsearch.node;

import java.io.IOException;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public final class CtlakeElasticsearch {

    static final int EXIT_FAILURE = 1;
    static final int EXIT_USAGE = 2;
    static final int EXIT_PORT_IN_USE = 3;
    static final int EXIT_HOME_LOCKED = 4;

    private static final String USAGE = "usage: java -Xms512m -Xmx512m -cp CLASSDIR:JARDIR/* org.elasticsearch.node.CtlakeElasticsearch \\\n"
        + "         --home DIR --http-port N --transport-port N [--cluster-name NAME] [--node-name NAME] [-E key=value ...]\n"
        + "         [--exit-after-start]   (port 0: any free port; --exit-after-start: start, then stop cleanly)";

    /** Parsed command line. */
    static final class Args {
        Path home;
        int httpPort = -1;
        int transportPort = -1;
        String clusterName = "ctlake";
        String nodeName = "ctlake-es";
        boolean exitAfterStart = false;
        final Map<String, String> extra = new LinkedHashMap<>();
    }

    static final class UsageException extends Exception {
        private static final long serialVersionUID = 1L;

        UsageException(String message) {
            super(message);
        }
    }

    private CtlakeElasticsearch() {}

    public static void main(String[] argv) {
        final long t0 = System.nanoTime();
        final PrintStream out = System.out;
        final PrintStream err = System.err;

        if (argv.length == 1 && (argv[0].equals("-h") || argv[0].equals("--help"))) {
            out.println(USAGE);
            return;
        }
        final Args args;
        try {
            args = parse(argv);
        } catch (UsageException e) {
            err.println("ctlake-elasticsearch: " + e.getMessage());
            err.println(USAGE);
            System.exit(EXIT_USAGE);
            return;
        }

        // Before any log4j / netty class is initialised (the distribution's jvm.options set these).
        System.setProperty("log4j.shutdownHookEnabled", "false");
        System.setProperty("log4j2.disable.jmx", "true");
        System.setProperty("log4j2.formatMsgNoLookups", "true");
        System.setProperty("io.netty.noUnsafe", "true");
        System.setProperty("io.netty.noKeySetOptimization", "true");
        System.setProperty("io.netty.recycler.maxCapacityPerThread", "0");

        // Fail fast, with a clear message, when a port is taken (Elasticsearch's own bind error is
        // still handled below, for the race where the port is taken between this check and start).
        for (int[] p : new int[][] { { args.httpPort, 0 }, { args.transportPort, 1 } }) {
            String what = p[1] == 0 ? "http" : "transport";
            String problem = p[0] == 0 ? null : checkPortFree(p[0]);
            if (problem != null) {
                err.println("ctlake-elasticsearch: " + what + " port 127.0.0.1:" + p[0] + " is not available (" + problem + ")");
                System.exit(EXIT_PORT_IN_USE);
                return;
            }
        }

        final Path home = args.home.toAbsolutePath().normalize();
        final Path config = home.resolve("config");
        final Path data = home.resolve("data");
        final Path logs = home.resolve("logs");
        try {
            Files.createDirectories(config);
            Files.createDirectories(data);
            Files.createDirectories(logs);
            // Before touching the running node's log configuration or log file: is the home in use?
            if (homeLocked(data)) {
                err.println("ctlake-elasticsearch: the home folder " + home + " is in use by another running Elasticsearch node");
                System.exit(EXIT_HOME_LOCKED);
                return;
            }
            Files.writeString(config.resolve("log4j2.properties"), log4jProperties(logs), StandardCharsets.UTF_8);
        } catch (IOException | RuntimeException e) {
            err.println("ctlake-elasticsearch: cannot prepare state folder " + home + ": " + e);
            System.exit(EXIT_FAILURE);
            return;
        }

        int code = Server.run(args, home, config, data, logs, t0, out, err);
        if (code != 0) {
            System.exit(code);
        }
    }

    /**
     * Everything that touches Elasticsearch / log4j classes is in this nested class so that none of
     * them is loaded before main() has set the system properties above.
     */
    private static final class Server {

        static int run(Args args, Path home, Path config, Path data, Path logs, long t0, PrintStream out, PrintStream err) {
            org.elasticsearch.common.settings.Settings.Builder sb = org.elasticsearch.common.settings.Settings.builder()
                .put("path.home", home.toString())
                .put("path.data", data.toString())
                .put("path.logs", logs.toString())
                .put("cluster.name", args.clusterName)
                .put("node.name", args.nodeName)
                .put("network.host", "127.0.0.1")
                .put("http.port", Integer.toString(args.httpPort))
                .put("transport.port", Integer.toString(args.transportPort))
                .put("discovery.type", "single-node")
                .put("cluster.routing.allocation.disk.threshold_enabled", false)
                .put("bootstrap.memory_lock", false);
            for (Map.Entry<String, String> e : args.extra.entrySet()) {
                sb.put(e.getKey(), e.getValue());
            }
            final org.elasticsearch.common.settings.Settings settings = sb.build();

            final org.elasticsearch.env.Environment environment;
            try {
                environment = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> args.nodeName);
                org.elasticsearch.common.logging.LogConfigurator.registerErrorListener();
                org.elasticsearch.common.logging.LogConfigurator.setClusterName(args.clusterName);
                org.elasticsearch.common.logging.LogConfigurator.setNodeName(args.nodeName);
                org.elasticsearch.common.logging.LogConfigurator.configure(environment, true);
            } catch (Exception e) {
                err.println("ctlake-elasticsearch: cannot set up the node environment / logging: " + e);
                e.printStackTrace(err);
                return EXIT_FAILURE;
            }
            final org.apache.logging.log4j.Logger log = org.apache.logging.log4j.LogManager.getLogger("ctlake");

            final List<Class<? extends org.elasticsearch.plugins.Plugin>> plugins = List.of(
                org.elasticsearch.transport.netty4.Netty4Plugin.class,
                CtlakeRootPlugin.class
            );
            final CountDownLatch stopped = new CountDownLatch(1);
            final Node node;
            try {
                node = new Node(NodeConstruction.prepareConstruction(environment, null, new NodeServiceProvider() {
                    @Override
                    org.elasticsearch.plugins.PluginsService newPluginService(
                        org.elasticsearch.env.Environment env,
                        org.elasticsearch.plugins.PluginsLoader pluginsLoader
                    ) {
                        return new org.elasticsearch.plugins.MockPluginsService(env.settings(), env, plugins);
                    }
                }, true));
            } catch (Throwable e) {
                return failure(log, err, "cannot build the node", e, args);
            }

            final Thread hook = new Thread(() -> {
                try {
                    log.info("stopping");
                    node.prepareForClose();
                    node.close();
                    if (node.awaitClose(10, TimeUnit.SECONDS) == false) {
                        log.warn("node did not stop within 10 seconds");
                    } else {
                        log.info("stopped cleanly");
                    }
                } catch (Throwable e) {
                    log.error("error while stopping the node", e);
                } finally {
                    org.apache.logging.log4j.core.config.Configurator.shutdown(
                        (org.apache.logging.log4j.core.LoggerContext) org.apache.logging.log4j.LogManager.getContext(false)
                    );
                    stopped.countDown();
                }
            }, "ctlake-es-shutdown");
            Runtime.getRuntime().addShutdownHook(hook);

            try {
                node.start();
            } catch (Throwable e) {
                return failure(log, err, "cannot start the node", e, args);
            }

            String httpAddress = "127.0.0.1:" + args.httpPort;
            String transportAddress = "127.0.0.1:" + args.transportPort;
            try {
                httpAddress = node.injector()
                    .getInstance(org.elasticsearch.http.HttpServerTransport.class)
                    .boundAddress()
                    .publishAddress()
                    .toString();
                transportAddress = node.injector()
                    .getInstance(org.elasticsearch.transport.TransportService.class)
                    .boundAddress()
                    .publishAddress()
                    .toString();
            } catch (RuntimeException ignored) {
                // informational only
            }
            long ms = (System.nanoTime() - t0) / 1_000_000L;
            log.info(
                "started in {} ms: Elasticsearch {} http://{} (transport {}) cluster [{}] node [{}] home [{}] pid {}",
                ms,
                org.elasticsearch.Build.current().qualifiedVersion(),
                httpAddress,
                transportAddress,
                args.clusterName,
                args.nodeName,
                home,
                ProcessHandle.current().pid()
            );

            if (args.exitAfterStart) {
                // used by build.sh --cds to record the start-up classes in a CDS archive at exit
                System.exit(0);
            }
            // Elasticsearch's threads are daemons: keep the JVM alive until the shutdown hook ran.
            try {
                stopped.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            return 0;
        }

        private static int failure(org.apache.logging.log4j.Logger log, PrintStream err, String what, Throwable e, Args args) {
            int code = EXIT_FAILURE;
            String detail = String.valueOf(e.getMessage());
            for (Throwable t = e; t != null; t = t.getCause()) {
                if (t instanceof java.net.BindException
                    || t instanceof org.elasticsearch.http.BindHttpException
                    || t instanceof org.elasticsearch.transport.BindTransportException) {
                    code = EXIT_PORT_IN_USE;
                    detail = "a port is already in use (http " + args.httpPort + ", transport " + args.transportPort + "): " + t.getMessage();
                    break;
                }
                if (String.valueOf(t.getMessage()).contains("failed to obtain node locks")) {
                    code = EXIT_HOME_LOCKED;
                    detail = "the home folder is in use by another Elasticsearch node: " + t.getMessage();
                    break;
                }
            }
            // the stack trace goes to the log file only; stderr gets one plain line
            org.apache.logging.log4j.LogManager.getLogger("ctlake.detail").error("ctlake-elasticsearch: " + what + ": " + detail, e);
            err.println("ctlake-elasticsearch: " + what + ": " + detail);
            err.flush();
            return code; // System.exit runs the shutdown hook, which closes whatever was built
        }
    }

    static Args parse(String[] argv) throws UsageException {
        Args a = new Args();
        List<String> rest = new ArrayList<>(List.of(argv));
        for (int i = 0; i < rest.size(); i++) {
            String opt = rest.get(i);
            String value = null;
            int eq = opt.indexOf('=');
            if (opt.startsWith("--") && eq > 0) {
                value = opt.substring(eq + 1);
                opt = opt.substring(0, eq);
            }
            switch (opt) {
                case "-h", "--help" -> throw new UsageException("--help takes no other arguments");
                case "--exit-after-start" -> a.exitAfterStart = true;
                case "--home", "--http-port", "--transport-port", "--cluster-name", "--node-name", "-E" -> {
                    if (value == null) {
                        if (i + 1 >= rest.size()) {
                            throw new UsageException("missing value for " + opt);
                        }
                        value = rest.get(++i);
                    }
                    switch (opt) {
                        case "--home" -> {
                            if (value.isBlank()) throw new UsageException("--home must not be empty");
                            a.home = Path.of(value);
                        }
                        case "--http-port" -> a.httpPort = port(opt, value);
                        case "--transport-port" -> a.transportPort = port(opt, value);
                        case "--cluster-name" -> a.clusterName = name(opt, value);
                        case "--node-name" -> a.nodeName = name(opt, value);
                        default -> {
                            int e = value.indexOf('=');
                            if (e <= 0) throw new UsageException("-E expects key=value, got '" + value + "'");
                            a.extra.put(value.substring(0, e), value.substring(e + 1));
                        }
                    }
                }
                default -> throw new UsageException("unknown argument '" + rest.get(i) + "'");
            }
        }
        if (a.home == null) throw new UsageException("--home is required");
        if (a.httpPort < 0) throw new UsageException("--http-port is required");
        if (a.transportPort < 0) throw new UsageException("--transport-port is required");
        if (a.httpPort == a.transportPort && a.httpPort != 0) throw new UsageException("--http-port and --transport-port must differ");
        return a;
    }

    private static int port(String opt, String value) throws UsageException {
        try {
            int p = Integer.parseInt(value.trim());
            if (p < 0 || p > 65535) throw new NumberFormatException();
            return p;
        } catch (NumberFormatException e) {
            throw new UsageException(opt + " must be a port number 1-65535 (0: any free port), got '" + value + "'");
        }
    }

    private static String name(String opt, String value) throws UsageException {
        if (value.isBlank() || value.matches(".*[\\s:/\\\\,\"*?<>|#].*")) {
            throw new UsageException(opt + " must be a non-empty name without spaces or : / \\ , \" * ? < > | #, got '" + value + "'");
        }
        return value;
    }

    /** True when another process holds data/node.lock (the lock Elasticsearch's NodeEnvironment takes). */
    static boolean homeLocked(Path data) throws IOException {
        Path lockFile = data.resolve("node.lock");
        if (Files.exists(lockFile) == false) {
            return false;
        }
        try (
            java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(
                lockFile,
                java.nio.file.StandardOpenOption.WRITE
            )
        ) {
            java.nio.channels.FileLock lock = ch.tryLock();
            if (lock == null) {
                return true;
            }
            lock.release();
            return false;
        } catch (java.nio.channels.OverlappingFileLockException e) {
            return true;
        }
    }

    /** Returns null when 127.0.0.1:port can be bound, else why not. */
    static String checkPortFree(int port) {
        try (ServerSocket s = new ServerSocket()) {
            s.setReuseAddress(true); // as Elasticsearch binds (network.tcp.reuse_address defaults to true on Linux)
            s.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), port));
            return null;
        } catch (IOException e) {
            return "already in use: " + e.getMessage();
        }
    }

    /** log4j2 configuration: everything to a file under the state folder, only warnings and our own lines to stdout. */
    static String log4jProperties(Path logs) {
        String file = logs.resolve("elasticsearch.log").toString().replace("\\", "/");
        String pattern = logs.resolve("elasticsearch-%i.log.gz").toString().replace("\\", "/");
        return String.join(
            "\n",
            "# generated by CtlakeElasticsearch at every start; edits are overwritten",
            "status = error",
            "appender.console.type = Console",
            "appender.console.name = console",
            "appender.console.target = SYSTEM_OUT",
            "appender.console.layout.type = PatternLayout",
            "appender.console.layout.pattern = [%d{HH:mm:ss,SSS}][%-5p][es] %m%n",
            "appender.file.type = RollingFile",
            "appender.file.name = file",
            "appender.file.fileName = " + file,
            "appender.file.filePattern = " + pattern,
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] %m%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 16MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = info",
            "rootLogger.appenderRef.file.ref = file",
            "rootLogger.appenderRef.console.ref = console",
            "rootLogger.appenderRef.console.level = warn",
            "logger.ctlake.name = ctlake",
            "logger.ctlake.level = info",
            "logger.ctlake.additivity = false",
            "logger.ctlake.appenderRef.file.ref = file",
            "logger.ctlake.appenderRef.console.ref = console",
            "logger.ctlakedetail.name = ctlake.detail",
            "logger.ctlakedetail.level = info",
            "logger.ctlakedetail.additivity = false",
            "logger.ctlakedetail.appenderRef.file.ref = file",
            "logger.deprecation.name = org.elasticsearch.deprecation",
            "logger.deprecation.level = warn",
            "logger.deprecation.additivity = false",
            "logger.deprecation.appenderRef.file.ref = file",
            ""
        );
    }
}
