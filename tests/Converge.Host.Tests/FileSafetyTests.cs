using System.Runtime.Versioning;
using Converge.Management.Contracts;

namespace Converge.Host.Tests;

/// <summary>
/// What a real host creates is its owner's only (folders 0700, files 0600), and <c>disk add</c> stays under the disk
/// roots and never follows a symbolic link; a refused add creates nothing.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class FileSafetyTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private const UnixFileMode GroupOrOther =
        UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute |
        UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    [Fact]
    public void Data_directory_is_0700_and_its_files_0600()
    {
        // The test made the folder (0755 by the usual umask) before the host started; the host tightened it.
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(fixture.DataDir));
        var checkedFiles = 0;
        foreach (var path in Directory.EnumerateFileSystemEntries(fixture.DataDir, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint }))
        {
            if (Path.GetFileName(path) == "host.test.log" || new FileInfo(path).LinkTarget is not null)
            {
                continue; // the test harness's own redirect of the host's output, and the links the tests below make
            }

            Assert.True((File.GetUnixFileMode(path) & GroupOrOther) == 0, $"{path} is {File.GetUnixFileMode(path)}");
            checkedFiles++;
        }

        foreach (var name in new[] { "d1.img", "host.json", "admin-token" })
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(fixture.DataDir, name)));
        }

        Assert.True(checkedFiles >= 4);
    }

    [Fact]
    public async Task Disk_added_under_the_data_directory_is_0600()
    {
        var path = Path.Combine(fixture.DataDir, "added.img");
        var info = await fixture.Host.Api.AddDiskAsync(path, "256MiB");
        Assert.Equal(path, info.Path);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
    }

    [Fact]
    public async Task Disk_outside_the_roots_is_refused_and_nothing_is_created()
    {
        using var elsewhere = new TempDir("converge-outside");
        var path = Path.Combine(elsewhere.Path, "outside.img");
        var error = await Assert.ThrowsAsync<ConvergeApiException>(() => fixture.Host.Api.AddDiskAsync(path, "256MiB"));
        Assert.Equal(400, error.Status);
        Assert.Contains("outside the disk roots", error.Detail, StringComparison.Ordinal);
        Assert.False(File.Exists(path));

        // A ".." walk out of the data directory is the same path.
        var sneaky = fixture.DataDir + "/../" + Path.GetFileName(elsewhere.Path) + "/sneaky.img";
        error = await Assert.ThrowsAsync<ConvergeApiException>(() => fixture.Host.Api.AddDiskAsync(sneaky, "256MiB"));
        Assert.Equal(400, error.Status);
        Assert.Empty(Directory.EnumerateFileSystemEntries(elsewhere.Path));

        // The CLI prints the reason.
        var cli = await NbdClients.ConvergeAsync(["disk", "add", path, "--size", "256MiB", "--api", fixture.Host.ApiUrl, "--token", fixture.Host.AdminToken!]);
        Assert.NotEqual(0, cli.ExitCode);
        Assert.Contains("outside the disk roots", cli.Stderr + cli.Stdout, StringComparison.Ordinal);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public async Task Symlinked_disk_paths_are_refused_and_nothing_is_created()
    {
        using var elsewhere = new TempDir("converge-target");

        // A link in the data directory to a file that does not exist yet: formatting would create it outside.
        var target = Path.Combine(elsewhere.Path, "target.img");
        var link = Path.Combine(fixture.DataDir, "link.img");
        File.CreateSymbolicLink(link, target);
        var error = await Assert.ThrowsAsync<ConvergeApiException>(() => fixture.Host.Api.AddDiskAsync(link, "256MiB"));
        Assert.Equal(400, error.Status);
        Assert.Contains("symbolic link", error.Detail, StringComparison.Ordinal);
        Assert.False(File.Exists(target));

        // A link to an existing file (here a copy of nothing: an empty file) is not adopted or formatted either.
        File.WriteAllBytes(target, []);
        error = await Assert.ThrowsAsync<ConvergeApiException>(() => fixture.Host.Api.AddDiskAsync(link, "256MiB"));
        Assert.Equal(400, error.Status);
        Assert.Equal(0, new FileInfo(target).Length);

        // A linked folder under the data directory leads outside too.
        var folder = Path.Combine(fixture.DataDir, "linked-folder");
        Directory.CreateSymbolicLink(folder, elsewhere.Path);
        error = await Assert.ThrowsAsync<ConvergeApiException>(() => fixture.Host.Api.AddDiskAsync(Path.Combine(folder, "inner.img"), "256MiB"));
        Assert.Equal(400, error.Status);
        Assert.Contains("symbolic link", error.Detail, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(elsewhere.Path, "inner.img")));
        Assert.DoesNotContain(await fixture.Host.Api.ListDisksAsync(), d => d.Path.StartsWith(elsewhere.Path, StringComparison.Ordinal) || d.Path == link);
    }
}
