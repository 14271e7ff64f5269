using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Converge.Security;

/// <summary>
/// One host's cluster identity in <c>DATA/tls/</c>: its key (<c>host.key</c>, 0600) and CA-signed certificate
/// (<c>host.crt</c>), the cluster CA certificate (<c>ca.crt</c>) and, on Raft voters, the CA key (<c>ca.key</c>, 0600).
/// </summary>
public sealed class HostIdentity : IDisposable
{
    public const string DirectoryName = "tls";
    public const string HostKeyFile = "host.key";
    public const string HostCertificateFile = "host.crt";
    public const string CaCertificateFile = "ca.crt";
    public const string CaKeyFile = "ca.key";

    private HostIdentity(X509Certificate2 certificate, X509Certificate2 caCertificate, ClusterCertificateAuthority? authority)
    {
        Certificate = certificate;
        CaCertificate = caCertificate;
        Authority = authority;
        Validator = new ClusterCertificateValidator(caCertificate, _ => false);
    }

    /// <summary>This host's certificate with its private key (server and client certificate of every cluster link).</summary>
    public X509Certificate2 Certificate { get; }

    /// <summary>The cluster CA certificate, the only trust anchor of cluster links.</summary>
    public X509Certificate2 CaCertificate { get; }

    public string CaFingerprint => CertificateFingerprint.Of(CaCertificate);

    /// <summary>Serial number (upper-case hex, as .NET formats it) of this host's certificate.</summary>
    public string Serial => Certificate.SerialNumber;

    /// <summary>The CA with its key: only on hosts that hold <c>ca.key</c> (Raft voters).</summary>
    public ClusterCertificateAuthority? Authority { get; private set; }

    /// <summary>Validates the other side of a cluster link: see <see cref="ClusterCertificateValidator"/>.</summary>
    public ClusterCertificateValidator Validator { get; private set; }

    public static string DirectoryOf(string dataDirectory) => Path.Combine(dataDirectory, DirectoryName);

    public static bool Exists(string dataDirectory) => File.Exists(Path.Combine(DirectoryOf(dataDirectory), HostCertificateFile));

    /// <summary>Loads the identity from <c>DATA/tls</c>; null when there is none yet.</summary>
    public static HostIdentity? Load(string dataDirectory)
    {
        var directory = DirectoryOf(dataDirectory);
        if (!File.Exists(Path.Combine(directory, HostCertificateFile)))
        {
            return null;
        }

        var certificate = WithKey(
            File.ReadAllText(Path.Combine(directory, HostCertificateFile)), File.ReadAllText(Path.Combine(directory, HostKeyFile)));
        var caPem = File.ReadAllText(Path.Combine(directory, CaCertificateFile));
        var caKey = Path.Combine(directory, CaKeyFile);
        var authority = File.Exists(caKey) ? ClusterCertificateAuthority.FromPem(caPem, File.ReadAllText(caKey)) : null;
        return new HostIdentity(certificate, X509Certificate2.CreateFromPem(caPem), authority);
    }

    /// <summary>The founder: a new cluster CA and this host's certificate signed by it, written to <c>DATA/tls</c>.</summary>
    public static HostIdentity Found(string dataDirectory, string clusterName, string hostName, IEnumerable<System.Net.IPAddress> addresses, DateTimeOffset now)
    {
        var authority = ClusterCertificateAuthority.Create(clusterName, now);
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var certificate = authority.SignHostCertificate(CreateSigningRequest(key, hostName), hostName, addresses, now);
        var directory = DirectoryOf(dataDirectory);
        CreateDirectory(directory);
        SecretFile.Write(Path.Combine(directory, CaKeyFile), authority.KeyPem());
        SecretFile.Write(Path.Combine(directory, CaCertificateFile), authority.Certificate.ExportCertificatePem(), PublicMode);
        SecretFile.Write(Path.Combine(directory, HostKeyFile), key.ExportPkcs8PrivateKeyPem());
        SecretFile.Write(Path.Combine(directory, HostCertificateFile), certificate.ExportCertificatePem(), PublicMode);
        return new HostIdentity(WithKey(certificate.ExportCertificatePem(), key.ExportPkcs8PrivateKeyPem()), X509Certificate2.CreateFromPem(authority.Certificate.ExportCertificatePem()), authority);
    }

    /// <summary>A new ECDSA P-256 key (written 0600 to <c>DATA/tls/host.key</c> at once) and a PKCS#10 request for it.</summary>
    public static string CreateKeyAndSigningRequest(string dataDirectory, string hostName)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var directory = DirectoryOf(dataDirectory);
        CreateDirectory(directory);
        SecretFile.Write(Path.Combine(directory, HostKeyFile), key.ExportPkcs8PrivateKeyPem());
        return CreateSigningRequest(key, hostName);
    }

    /// <summary>
    /// A joiner stores what the cluster sent for the key <see cref="CreateKeyAndSigningRequest"/> made: its certificate,
    /// the CA certificate, and the CA key if it becomes a voter. The certificate must match the key and chain to the CA.
    /// </summary>
    public static HostIdentity Complete(string dataDirectory, string certificatePem, string caCertificatePem, string? caKeyPem)
    {
        var directory = DirectoryOf(dataDirectory);
        var certificate = WithKey(certificatePem, File.ReadAllText(Path.Combine(directory, HostKeyFile)));
        var ca = X509Certificate2.CreateFromPem(caCertificatePem);
        if (!new ClusterCertificateValidator(ca, _ => false).Validate(certificate, out var reason))
        {
            throw new CryptographicException($"the certificate the cluster sent does not chain to its CA: {reason}");
        }

        SecretFile.Write(Path.Combine(directory, CaCertificateFile), caCertificatePem, PublicMode);
        SecretFile.Write(Path.Combine(directory, HostCertificateFile), certificatePem, PublicMode);
        var identity = new HostIdentity(certificate, ca, null);
        if (caKeyPem is not null)
        {
            identity.StoreAuthorityKey(dataDirectory, caKeyPem);
        }

        return identity;
    }

    /// <summary>Keeps the CA key (a host that became a Raft voter), 0600.</summary>
    public void StoreAuthorityKey(string dataDirectory, string caKeyPem)
    {
        var authority = ClusterCertificateAuthority.FromPem(CaCertificate.ExportCertificatePem(), caKeyPem);
        SecretFile.Write(Path.Combine(DirectoryOf(dataDirectory), CaKeyFile), caKeyPem);
        Authority = authority;
    }

    /// <summary>Validation from now on also refuses the certificates <paramref name="isRevoked"/> names (by serial).</summary>
    public void UseRevocationList(Func<string, bool> isRevoked) => Validator = new ClusterCertificateValidator(CaCertificate, isRevoked);

    public void Dispose()
    {
        Certificate.Dispose();
        CaCertificate.Dispose();
        Authority?.Dispose();
    }

    private const UnixFileMode PublicMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;

    private static string CreateSigningRequest(ECDsa key, string hostName) =>
        new CertificateRequest($"CN={hostName}, O=converge", key, HashAlgorithmName.SHA256).CreateSigningRequestPem();

    private static void CreateDirectory(string directory)
    {
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(directory);
        }
        else
        {
            Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }

    /// <summary>
    /// A certificate with its private key that TLS can use on any platform: PEM-imported keys are ephemeral, which
    /// SslStream refuses on some platforms, so round-trip through PKCS#12.
    /// </summary>
    private static X509Certificate2 WithKey(string certificatePem, string keyPem)
    {
        using var ephemeral = X509Certificate2.CreateFromPem(certificatePem, keyPem);
        return X509CertificateLoader.LoadPkcs12(ephemeral.Export(X509ContentType.Pkcs12), null);
    }
}
